"""Benchmark of sgxlaunchd (issue 21): 16 concurrent clients on the Unix socket.

Three phases of ``--seconds / 3`` each, 16 client processes (keep-alive connections) each:
``GET /v1/ping`` (the no-op: a request's cost with nothing behind it), ``POST /v1/token``
(a launch token for the example enclave's SIGSTRUCT) and ``POST /v1/run`` (a launch of the
example enclave, ECALL 0 included, the launch log on, owner mode). For each: requests/s, and
p50 / p99 latency. The platform is one and serialized, so a phase's cost per request is its
wall time / requests done.

Limits measured in the same run, on the same platform, in this process before the daemon
starts: launches of the example enclave per second and the time of one token mint through
``sgxlaunch.run`` / ``Platform.mint`` in-process. Targets:

* launches through the daemon ≥ 0.5 × the in-process rate;
* a token mint's cost through the daemon ≤ the in-process mint time + 1.5 × the no-op cost.

Run: ``.venv/bin/python bench/service.py [--seconds 20] [--clients 16]``
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import multiprocessing
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sgxlaunch
from sgxlaunch.service.client import DaemonClient


def setup(base: Path) -> tuple[Path, Path, bytes, bytes]:
    """An owner-mode platform whose policy allows the example enclave (docs/api.md recipe 2)."""
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    owners = [sgxlaunch.generate_owner_key() for _ in range(3)]
    root = sgxlaunch.owner_root(owners, threshold=2, expires=expires)
    le_key = sgxlaunch.generate_key()
    home, machine = base / "home", base / "machine" / "machine.json"
    image_path = base / "hello.sgxs"
    image_path.write_bytes(sgxlaunch.example_image())
    sig = sgxlaunch.sign(sgxlaunch.generate_key(), image=str(image_path), isvprodid=1, isvsvn=1)
    with sgxlaunch.create_platform(home, machine, root=root) as platform:
        platform.set_launch_enclave(sgxlaunch.sign_launch_enclave(root, le_key))
    with sgxlaunch.open_platform(home, machine) as platform:
        platform.set_mode(
            sgxlaunch.sign_mode(
                "owner",
                owners[:2],
                version=1,
                expires=expires,
                le_mrsigner=sgxlaunch.mrsigner_of(le_key.public_key()),
            )
        )
    policy = {
        "spec_version": "1",
        "version": 1,
        "expires": expires.isoformat().replace("+00:00", "Z"),
        "allow": [{"id": "hello", "mrsigner": sig.mrsigner.hex(), "isvprodid": 1}],
        "deny": [],
    }
    with sgxlaunch.open_platform(home, machine) as platform:
        platform.install_policy(sgxlaunch.sign_policy(policy, owners[:2]))
    return home, machine, image_path.read_bytes(), sig.to_bytes()


def in_process(
    home: Path, machine: Path, image: bytes, sig: bytes, seconds: float
) -> dict[str, float]:
    """Launches per second and seconds per token mint, on the platform in this process."""
    import io

    parsed = sgxlaunch.read_image(io.BytesIO(image))
    with sgxlaunch.open_platform(home, machine) as platform:
        launches, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            launch = sgxlaunch.run(platform, parsed, sig, ecall_input=b"bench")
            assert launch.result.enclave is not None
            launches += 1
        launch_rate = launches / (time.perf_counter() - started)
        mints, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            assert platform.mint(sig).allowed
            mints += 1
        mint_time = (time.perf_counter() - started) / mints
    return {"launch_rate": launch_rate, "mint_s": mint_time}


def _client(path: str, method: str, target: str, body: Any, until: float, out: Any) -> None:
    client = DaemonClient(path, keep_alive=True, timeout=120)
    latencies = []
    failures = 0
    while time.perf_counter() < until:
        started = time.perf_counter()
        status, _data = client.raw(method, target, body)
        latencies.append(time.perf_counter() - started)
        failures += status != 200
    client.close()
    out.send((latencies, failures))


def phase(
    path: str, clients: int, seconds: float, method: str, target: str, body: Any
) -> dict[str, float]:
    """``clients`` processes sending the request for ``seconds``: rate and latencies."""
    context = multiprocessing.get_context("fork")
    pipes, procs = [], []
    started = time.perf_counter()
    until = started + seconds
    for _ in range(clients):
        reader, writer = context.Pipe(duplex=False)
        proc = context.Process(target=_client, args=(path, method, target, body, until, writer))
        proc.start()
        pipes.append(reader)
        procs.append(proc)
    latencies: list[float] = []
    failures = 0
    for reader in pipes:
        got, failed = reader.recv()
        latencies.extend(got)
        failures += failed
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - started
    latencies.sort()
    if failures:
        raise SystemExit(f"{target}: {failures} requests failed")
    return {
        "requests": len(latencies),
        "rate": len(latencies) / wall,
        "cost_s": wall / len(latencies),
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="all three phases together")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--baseline-seconds", type=float, default=4.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sgxlaunch-bench-service-"))
    home, machine, image, sig = setup(base)
    limit = in_process(home, machine, image, sig, args.baseline_seconds)
    socket_path = base / "d.sock"
    log = open(base / "sgxlaunchd.log", "wb")  # noqa: SIM115 - the daemon's stderr
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sgxlaunch",
            "serve",
            "--home",
            str(home),
            "--machine",
            str(machine),
            "--socket",
            str(socket_path),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert daemon.stdout is not None
        ready, _, _ = select.select([daemon.stdout], [], [], 120)
        if not ready or not json.loads(daemon.stdout.readline()).get("ready"):
            raise SystemExit("sgxlaunchd did not start")
        b64 = base64.b64encode
        run_body = {"image": b64(image).decode(), "sigstruct": b64(sig).decode(), "input": "bench"}
        each = args.seconds / 3
        results = {
            "ping": phase(str(socket_path), args.clients, each, "GET", "/v1/ping", None),
            "token": phase(
                str(socket_path),
                args.clients,
                each,
                "POST",
                "/v1/token",
                {"sigstruct": b64(sig).decode()},
            ),
            "run": phase(str(socket_path), args.clients, each, "POST", "/v1/run", run_body),
        }
    finally:
        daemon.terminate()
        daemon.wait(60)
        log.close()
    cpus = os.cpu_count()
    print(f"sgxlaunchd, {args.clients} concurrent clients, {args.seconds:.0f} s ({cpus} CPUs)")
    header = ("operation", "requests", "req/s", "cost/req", "p50", "p99")
    print(f"{header[0]:<10} " + " ".join(f"{h:>10}" for h in header[1:]))
    for name, r in results.items():
        print(
            f"{name:<10} {r['requests']:>10} {r['rate']:>10.1f} {r['cost_s'] * 1e3:>8.3f}ms "
            f"{r['p50_s'] * 1e3:>8.3f}ms {r['p99_s'] * 1e3:>8.3f}ms"
        )
    noop = results["ping"]["cost_s"]
    rate, inproc_rate = results["run"]["rate"], limit["launch_rate"]
    launch_ratio = rate / inproc_rate
    mint, inproc_mint = results["token"]["cost_s"], limit["mint_s"]
    mint_limit = inproc_mint + 1.5 * noop
    print(
        f"in-process (same run): {inproc_rate:.1f} launches/s, "
        f"token mint {inproc_mint * 1e3:.3f} ms"
    )
    verdict = "PASS" if launch_ratio >= 0.5 else "FAIL"
    print(
        f"launches: daemon {rate:.1f}/s vs in-process {inproc_rate:.1f}/s "
        f"= {launch_ratio:.2f} (target >= 0.5) {verdict}"
    )
    verdict = "PASS" if mint <= mint_limit else "FAIL"
    print(
        f"token mint: daemon {mint * 1e3:.3f} ms vs in-process {inproc_mint * 1e3:.3f} ms "
        f"+ 1.5 x no-op {noop * 1e3:.3f} ms = {mint_limit * 1e3:.3f} ms "
        f"(ratio {mint / mint_limit:.2f}, target <= 1) {verdict}"
    )
    return 0 if launch_ratio >= 0.5 and mint <= mint_limit else 1


if __name__ == "__main__":
    sys.exit(main())
