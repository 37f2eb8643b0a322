"""kill -9 at random points of the owner's operations: the platform always starts again, in the
old or the new state, never in an older one.

A platform (SQLite home + machine file, as the CLI keeps them) runs one operation at a time in
a forked child: install-policy, mode (same signer), owner-root rotation (same keys, version + 1,
the launch enclaves re-signed in the same home commit), launch-enclave signer change (a mode
document naming the other key: a counter handover), or a launch (a log append).
The parent SIGKILLs the child at a random moment of the operation; one run in four the child
kills itself exactly between storing the sealed state and advancing the counter (for a
rotation: between the home commit and the machine's binding). After each
kill the parent opens the platform and checks: it starts; the policy version, mode-document
version, root version and launch-enclave signer each equal the value before the operation or
the one it was installing; the counter never went down; the allowed enclave still launches.
Then it goes on from whatever state it found.

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

from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, program_image
from sgxlaunch.cpu.machine import Machine, MachineState
from sgxlaunch.driver import as_sgxs_image
from sgxlaunch.launch.enclave import sign_launch_enclave
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
from sgxlaunch.sigstruct import RsaKeySigner, mrsigner_of, sign
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
        self.owner = [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)]
        self.app = _app(rsa_signer("generated/case2_prodid_svn_debug.key.pem"))
        FileMachine.create(
            self.machine_path, PlatformConfig(epc_size=4 << 20).machine_state(os.urandom(32))
        )
        with open_store(self.home) as store:
            take_ownership(store, self.machine(), self.root_doc(1), NOW)
            p = Platform.open(store, self.machine(), clock=clock)
            for k in self.le_keys:
                p.set_launch_enclave(sign_launch_enclave(self.root_doc(1), k))
        self.expect = {"policy": 0, "mode": 0, "root": 1, "signer": None, "counter": 0}
        self.versions = {"policy": 0, "mode": 0, "root": 1}

    def machine(self) -> FileMachine:
        return FileMachine(self.machine_path)

    def root_doc(self, version: int) -> bytes:
        """Version ``version`` of the owner root: the same 2-of-3 keys (a rotation that extends
        the root; a threshold of the old and of the new keys sign it)."""
        root = OwnerRoot.create(
            version=version, expires=LATER, threshold=2, keys=[k.public_key for k in self.owner]
        )
        return sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), self.owner[:2]).to_bytes()

    def keys(self) -> list[PrivateKeySigner]:
        return self.owner[:2]

    def policy(self, version: int) -> bytes:
        doc = {
            "spec_version": "1",
            "version": version,
            "expires": "2027-06-01T00:00:00Z",
            "allow": [{"id": "app", "mrsigner": self.app[1].mrsigner.hex(), "isvprodid": 1}],
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


class App(EnclaveProgram):
    """The enclave the owner's policy allows (its launches append to the launch log)."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        return data


def _app(key: RsaKeySigner) -> tuple[Any, Sigstruct]:
    image = program_image(App)
    body = Sigstruct(
        attributes=Attributes(flags=int(AttributeFlag.MODE64BIT), xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=1,
        isvsvn=1,
        enclavehash=image.mrenclave(),
    )
    return as_sgxs_image(image), sign(body, key)


def launches(world: World) -> bool:
    with open_store(world.home, create=False) as store:
        p = Platform.open(store, world.machine(), clock=clock)
        return p.mode != "owner" or p.run(*world.app).decision == "allowed"


def operation(
    world: World, state: dict[str, Any], rng: random.Random
) -> tuple[str, dict[str, Any], Any]:
    """Pick an operation; return its name, the fields it may change and a child function."""
    kinds = ["install-policy", "mode", "rotate-root", "signer-change", "launch"]
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
        version = state["root"] + 1
        data = world.root_doc(version)
        sigs = [sign_launch_enclave(data, k) for k in world.le_keys]
        return kind, {"root": version}, lambda p: p.rotate_root(data, sigs)
    image, sig = world.app
    return kind, {}, lambda p: p.run(image, sig)


class KilledAtWrite:
    """The machine as the child sees it when it is to die after its home commit and before
    the machine write (the counter advance, or the owner binding of a rotation)."""

    def __init__(self, inner: FileMachine) -> None:
        self.inner = inner

    def load(self) -> MachineState:
        return self.inner.load()

    def swap(self, expected: MachineState, new: MachineState) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def child(world: World, fn: Any, crash_between: bool, ready: int) -> None:
    with open_store(world.home, create=False) as store:
        machine: Machine = KilledAtWrite(world.machine()) if crash_between else world.machine()
        platform = Platform.open(store, machine, clock=clock)
        os.write(ready, b"!")
        fn(platform)
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
        durations: dict[str, float] = {}
        started = time.perf_counter()
        while kills < args.kills:
            kind, changes, fn = operation(world, state, rng)
            crash_between = rng.random() < 0.25
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                try:
                    child(world, fn, crash_between, ready_w)
                except BaseException as exc:
                    print(f"child error in {kind}: {exc}", file=sys.stderr)
                    os._exit(3)
            os.close(ready_w)
            os.read(ready_r, 1)  # the child opened the platform; the operation starts now
            os.close(ready_r)
            begun = time.perf_counter()
            if not crash_between:
                # A random point of the operation: up to 1.2 x its mean uninterrupted length.
                time.sleep(rng.uniform(0.0, 1.2 * durations.get(kind, 0.05)))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                took = time.perf_counter() - begun
                durations[kind] = 0.8 * durations.get(kind, took) + 0.2 * took
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
            if after["mode"] and after["policy"] and not launches(world):
                print(f"FAIL: after {kind} the allowed enclave no longer launches", file=sys.stderr)
                return 1
            if after["counter"] < state["counter"]:
                print("FAIL: the counter went down", file=sys.stderr)
                return 1
            if changes:
                new_state = all(after[f] == changes[f] for f in changes)
            else:  # a launch: its record (and counter advance) was committed or not
                new_state = after["counter"] > state["counter"]
            if killed:
                outcomes.setdefault(kind, [0, 0])[0 if new_state else 1] += 1
            state = after
        elapsed = time.perf_counter() - started
    print(f"kills: {kills} (between the home commit and the machine write: {between})")
    print(f"operations that completed before their kill (not counted as kills): {completed}")
    print("after a kill, the platform restarted:")
    for kind, (new, old) in sorted(outcomes.items()):
        print(f"  {kind:<15} in the new state {new:>4}, in the old state {old:>4}, older: 0")
    print(f"never older; the platform started after every kill ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
