"""The launch log under concurrency and kill -9: every attempt recorded, the log verifies.

``race``: N concurrent ``sgxlaunch run`` processes and one ``sgxlaunch platform install-policy``
against one home (owner mode, SQLite home + machine file as the CLI keeps them), repeated for
R rounds. Then: the log verifies inside the launch enclave, every attempt has exactly one
outcome, there is one attempt per ``run`` process and one "initialized" outcome per run that
exited 0.

``kill9``: each cycle forks launchers (in-process ``Platform.run`` in a loop; each reports the
token KEYID of every launch it saw succeed) and one policy installer, and SIGKILLs every child
at a random moment. After each cycle the platform opens (appending "outcome unknown" for an
attempt whose process died), the log verifies, the attempt/outcome pairing holds, and every
KEYID a child saw succeed has an attempt record whose outcome is "initialized".

    python bench/log_race.py race [--processes 20] [--rounds 20]
    python bench/log_race.py kill9 [--kills 200] [--launchers 3] [--seed 1] [--window 0.8]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sgxlaunch.arch import Sigstruct
from sgxlaunch.formats import sgxs
from sgxlaunch.launch.log import check_exactly_once
from tests.support.home import DiskHome, make_disk_home

SGXLAUNCH = Path(sys.executable).with_name("sgxlaunch")


def check_log(home: DiskHome) -> list[dict[str, Any]]:
    """Open the platform, verify the log and the pairing; the records."""
    platform = home.open()
    count = platform.verify_log()
    records = platform.log_records()
    if len(records) != count:
        raise AssertionError(f"{len(records)} records, {count} verified")
    check_exactly_once(records)
    return records


def outcomes(records: list[dict[str, Any]]) -> dict[int, str]:
    return {r["attempt"]: r["outcome"] for r in records if r.get("kind") == "outcome"}


def race(processes: int, rounds: int) -> int:
    base = Path(tempfile.mkdtemp(prefix="sgxlaunch-race-"))
    home = make_disk_home(base)
    where = ["--home", str(home.home), "--machine", str(home.machine)]
    started = time.perf_counter()
    ok_runs = 0
    installed = 0
    for round_ in range(rounds):
        policy = base / f"policy-{round_ + 2}.json"
        policy.write_bytes(home.policy(round_ + 2))
        children = [
            subprocess.Popen(
                [SGXLAUNCH, "run", str(home.image), "--sig", str(home.sig), *where],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(processes)
        ]
        installer = subprocess.Popen(
            [SGXLAUNCH, "platform", "install-policy", str(policy), *where],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for child in children:
            _, err = child.communicate()
            if child.returncode == 0:
                ok_runs += 1
            else:
                print(f"round {round_}: run exited {child.returncode}: {err.decode()[:200]}")
        _, err = installer.communicate()
        if installer.returncode == 0:
            installed += 1
        else:
            print(f"round {round_}: install-policy exited {installer.returncode}: {err.decode()}")
        records = check_log(home)
        print(f"round {round_ + 1}/{rounds}: {len(records)} records verify", flush=True)
    records = check_log(home)
    attempts = [r for r in records if r.get("kind") == "attempt"]
    done = outcomes(records)
    initialized = sum(1 for a in attempts if done.get(a["seq"]) == "initialized")
    print(
        f"{processes} processes x {rounds} rounds ({processes * rounds} runs, {installed} of "
        f"{rounds} policies installed) in {time.perf_counter() - started:.0f} s"
    )
    print(
        f"  runs exiting 0: {ok_runs}; attempt records: {len(attempts)}; outcomes "
        f"'initialized': {initialized}; records: {len(records)}; log verifies"
    )
    good = len(attempts) == processes * rounds and initialized == ok_runs
    print("OK" if good else "FAIL: attempts or outcomes do not match the runs")
    return 0 if good else 1


def _launcher(home: DiskHome, report: int) -> None:  # pragma: no cover - a child
    image = sgxs.parse_sgxs(home.image.read_bytes())
    sig = Sigstruct.from_bytes(home.sig.read_bytes())
    platform = home.open()
    while True:
        result = platform.run(image, sig)
        if result.enclave is not None and result.keyid:
            os.write(report, f"{result.keyid}\n".encode())


def _installer(home: DiskHome) -> None:  # pragma: no cover - a child
    while True:
        platform = home.open()
        state = platform.state
        version = 1 if state is None or state.policy is None else state.policy.version + 1
        platform.install_policy(home.policy(version))


def kill9(kills: int, launchers: int, seed: int, window: float) -> int:
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="sgxlaunch-kill9-"))
    home = make_disk_home(base)
    seen: set[str] = set()
    done_kills = 0
    cycle = 0
    started = time.perf_counter()
    while done_kills < kills:
        cycle += 1
        read_end, write_end = os.pipe()
        children = []
        for index in range(launchers + 1):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os.close(read_end)
                try:
                    if index < launchers:
                        _launcher(home, write_end)
                    else:
                        _installer(home)
                finally:
                    os._exit(3)
            children.append(pid)
        os.close(write_end)
        for pid in children:
            time.sleep(rng.uniform(0.0, window))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            done_kills += 1
        with os.fdopen(read_end) as reports:
            seen.update(line.strip() for line in reports if line.strip())
        records = check_log(home)
        done = outcomes(records)
        initialized = {
            r.get("token_keyid")
            for r in records
            if r.get("kind") == "attempt" and done.get(r["seq"]) == "initialized"
        }
        missing = seen - initialized
        if missing:
            print(f"FAIL: cycle {cycle}: {len(missing)} launches seen to succeed lack a record")
            return 1
        unknown = sum(1 for v in done.values() if v == "unknown")
        print(
            f"cycle {cycle}: {done_kills} kills, {len(records)} records verify, "
            f"{len(seen)} successes seen, all recorded; {unknown} outcomes unknown",
            flush=True,
        )
    print(
        f"{done_kills} kills in {cycle} cycles ({time.perf_counter() - started:.0f} s): the log "
        f"verified after each; all {len(seen)} launches seen to succeed have an 'initialized' "
        "record"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("race")
    r.add_argument("--processes", type=int, default=20)
    r.add_argument("--rounds", type=int, default=20)
    k = sub.add_parser("kill9")
    k.add_argument("--kills", type=int, default=200)
    k.add_argument("--launchers", type=int, default=3)
    k.add_argument("--seed", type=int, default=1)
    k.add_argument(
        "--window",
        type=float,
        default=0.8,
        help="most seconds before each kill (loaded host: more)",
    )
    args = parser.parse_args()
    if args.what == "race":
        return race(args.processes, args.rounds)
    return kill9(args.kills, args.launchers, args.seed, args.window)


if __name__ == "__main__":
    sys.exit(main())
