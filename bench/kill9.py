"""kill -9 at random points of the owner's operations: the platform always starts again, in the
old or the new state, never in an older one.

A platform (SQLite home + machine file, as the CLI keeps them) runs one operation at a time in
a forked child: install-policy, mode (same signer), owner-root rotation, launch-enclave signer
change (a mode document naming the other key: a counter handover), or a launch (a log append).
The parent SIGKILLs the child at a random moment of the operation; one run in four the child
kills itself exactly between storing the sealed state and advancing the counter. After each
kill the parent opens the platform and checks: it starts; the policy version, mode-document
version, root version and launch-enclave signer each equal the value before the operation or
the one it was installing; the counter never went down; a launch still gets the expected
decision. Then it goes on from whatever state it found.

    python bench/kill9.py [--kills 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sgxlaunch.launch.enclave import Call, sign_launch_enclave
from sgxlaunch.launch.platform import Platform, PlatformConfig, take_ownership
from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    OwnerRoot,
    PrivateKeySigner,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument
from sgxlaunch.sigstruct import RsaKeySigner, mrsigner_of
from sgxlaunch.store import FileMachine, open_store

VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"
NOW = datetime(2026, 11, 28, tzinfo=UTC)
LATER = NOW + timedelta(days=365)


def clock() -> datetime:
    return NOW


def rsa_signer(rel: str) -> RsaKeySigner:
    key = load_pem_private_key((VECTORS / rel).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return RsaKeySigner(key)


class World:
    def __init__(self, work: Path) -> None:
        self.home = work / "home"
        self.machine_path = work / "machine" / "machine.json"
        self.le_keys = [
            rsa_signer("kselftest/sign_key.pem"),
            rsa_signer("generated/case4_kss_like_attrs.key.pem"),
        ]
        self.roots: list[list[PrivateKeySigner]] = [
            [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)]
        ]
        FileMachine.create(
            self.machine_path, PlatformConfig(epc_size=4 << 20).machine_state(os.urandom(32))
        )
        with open_store(self.home) as store:
            take_ownership(store, self.machine(), self.root_doc(0), NOW)
            p = Platform.open(store, self.machine(), clock=clock)
            for k in self.le_keys:
                p.set_launch_enclave(sign_launch_enclave(self.root_doc(0), k))
        self.expect = {"policy": 0, "mode": 0, "root": 1, "signer": None, "counter": 0}
        self.versions = {"policy": 0, "mode": 0, "root": 1}

    def machine(self) -> FileMachine:
        return FileMachine(self.machine_path)

    def root_doc(self, index: int) -> bytes:
        keys = self.roots[index]
        root = OwnerRoot.create(
            version=index + 1, expires=LATER, threshold=2, keys=[k.public_key for k in keys]
        )
        signers = keys[:2] if index == 0 else [*self.roots[index - 1][:2], *keys[:2]]
        return sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers).to_bytes()

    def keys(self) -> list[PrivateKeySigner]:
        return self.roots[-1][:2]

    def policy(self, version: int) -> bytes:
        doc = {
            "spec_version": "1",
            "version": version,
            "expires": "2027-06-01T00:00:00Z",
            "allow": [],
            "deny": [],
        }
        return sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(doc), self.keys()).to_bytes()

    def mode(self, version: int, signer: int) -> bytes:
        doc = ModeDocument.create(
            version=version,
            expires=LATER,
            mode="owner",
            le_mrsigner=mrsigner_of(self.le_keys[signer].public_key()),
        )
        return sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), self.keys()).to_bytes()

    def observe(self) -> dict[str, Any]:
        with open_store(self.home, create=False) as store:
            p = Platform.open(store, self.machine(), clock=clock)
            s = p.state
            assert s is not None
            return {
                "policy": 0 if s.policy is None else s.policy.version,
                "mode": 0 if s.mode is None else s.mode.version,
                "root": s.root.version,
                "signer": p.le_signer,
                "counter": self.machine().load().counter.value,
                "signer_index": None
                if p.le_signer is None
                else [mrsigner_of(k.public_key()) for k in self.le_keys].index(p.le_signer),
            }


def operation(
    world: World, state: dict[str, Any], rng: random.Random
) -> tuple[str, dict[str, Any], Any]:
    """Pick an operation; return its name, the fields it may change and a child function."""
    kinds = ["install-policy", "mode", "signer-change"]
    if state["mode"] == 0:
        kinds = ["install-policy", "mode"]
    kind = rng.choice(kinds)
    sidx = state["signer_index"] if state["signer_index"] is not None else 0
    if kind == "install-policy":
        data = world.policy(state["policy"] + 1)
        return kind, {"policy": state["policy"] + 1}, lambda p: p.install_policy(data)
    if kind == "mode":
        data = world.mode(state["mode"] + 1, sidx)
        return kind, {"mode": state["mode"] + 1}, lambda p: p.set_mode(data)
    if kind == "signer-change":
        data = world.mode(state["mode"] + 1, 1 - sidx)
        return (
            kind,
            {"mode": state["mode"] + 1, "signer_index": 1 - sidx},
            lambda p: p.set_mode(data),
        )
    if kind == "rotate-root":
        world.roots.append(
            [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)]
        )
        index = len(world.roots) - 1
        data = world.root_doc(index)
        new_sigs = [sign_launch_enclave(data, k) for k in world.le_keys]
        mode = world.mode(state["mode"] + 1, sidx)
        policy = world.policy(state["policy"] + 1)

        def rotate(p: Platform) -> None:
            p.rotate_root(data)
            for sig in new_sigs:
                p.set_launch_enclave(sig)
            q = Platform.open(p.store, p.machine, clock=clock, maintenance=True)
            q.set_mode(mode)
            Platform.open(p.store, p.machine, clock=clock).install_policy(policy)

        return (
            kind,
            {"root": index + 1, "mode": state["mode"] + 1, "policy": state["policy"] + 1},
            rotate,
        )
    return kind, {}, lambda p: p.run_log_probe()


def child(world: World, fn: Any, crash_between: bool) -> None:
    with open_store(world.home, create=False) as store:
        p = Platform.open(store, world.machine(), clock=clock, maintenance=True)
        if crash_between:
            original = p._le_call

            def call(c: Call, request: Any) -> Any:
                if c == Call.ADVANCE:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(c, request)

            p._le_call = call  # type: ignore[method-assign, assignment]
        fn(p)
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        state = world.observe()
        kills = completed = between = 0
        outcomes: dict[str, list[int]] = {}
        started = time.perf_counter()
        while kills < args.kills:
            kind, changes, fn = operation(world, state, rng)
            crash_between = rng.random() < 0.25 and kind != "rotate-root"
            pid = os.fork()
            if pid == 0:
                try:
                    child(world, fn, crash_between)
                except BaseException as exc:
                    print(f"child error in {kind}: {exc}", file=sys.stderr)
                    os._exit(3)
            if not crash_between:
                time.sleep(rng.uniform(0.0, 0.08))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
                print(f"FAIL: the {kind} operation itself failed", file=sys.stderr)
                return 1
            kills += killed
            completed += not killed
            between += killed and crash_between
            try:
                after = world.observe()
            except Exception as exc:
                print(
                    f"FAIL: the platform does not start after a kill in {kind}: {exc}",
                    file=sys.stderr,
                )
                return 1
            for field in ("policy", "mode", "root", "signer_index"):
                old, new = state[field], changes.get(field, state[field])
                if after[field] not in (old, new):
                    print(
                        f"FAIL: {kind}: {field} is {after[field]}, expected {old} or {new}",
                        file=sys.stderr,
                    )
                    return 1
            if after["counter"] < state["counter"]:
                print("FAIL: the counter went down", file=sys.stderr)
                return 1
            new_state = all(after[f] == changes[f] for f in changes) if changes else True
            outcomes.setdefault(kind, [0, 0])[0 if new_state and changes else 1] += 1
            if kind == "rotate-root" and after["root"] != state["root"]:
                pass
            else:
                world.roots = world.roots[: after["root"]]
            state = after
        elapsed = time.perf_counter() - started
    print(f"kills: {kills} (between sealing and the counter advance: {between})")
    print(f"operations that completed before their kill: {completed}")
    for kind, (new, old) in sorted(outcomes.items()):
        print(f"  {kind:<15} restarted in the new state {new:>4}, in the old state {old:>4}")
    print(f"never older; the platform started after every kill ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
