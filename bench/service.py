"""Benchmark of sgxlaunchd (issue 21): 16 concurrent clients on the Unix socket.

16 client processes, forked once, each with its keep-alive connection, send one kind of
request at a time, all together, for a slice of time: ``GET /v1/ping`` (the no-op: a request's
cost with nothing behind it), ``POST /v1/token`` (a launch token for the example enclave's
SIGSTRUCT) and ``POST /v1/run`` (a launch of the example enclave, ECALL 0 included, the launch
log on, owner mode). The platform is one and serialized, so a slice's cost per request is its
wall time / requests done. For each kind: requests/s, that cost, p50 / p99 latency, and the CPU
time (user + system) per request of the daemon (``/proc/<pid>/stat``) and of the clients.

Ping and token share 2/3 of ``--seconds`` as ``--pairs`` pairs of slices, back to back, the
order alternating from pair to pair (ping first, then token first, ...): load from outside that
drifts during the run weighs on both sides of a pair alike. The launches get the last third.

Limits measured in the same run, on the same platform, in this process before the daemon
starts: launches of the example enclave per second and the time of one token mint through
``sgxlaunch.run`` / ``Platform.mint`` in-process. Targets:

* launches through the daemon ≥ 0.5 × the in-process rate;
* a token mint's cost through the daemon ≤ the in-process mint time + 1.5 × the no-op cost:
  each pair's ratio ``token cost / (in-process mint + 1.5 × that pair's ping cost)`` is
  printed, and the target is judged on their median (the ratio over all slices together is
  printed beside it).

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


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` so far, in clock ticks (``/proc/<pid>/stat`` fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _worker(path: str, orders: Any, out: Any) -> None:
    """One client process: one keep-alive connection; for each order (method, target, body,
    until) it sends the request until ``until`` and reports its latencies, failures and the
    CPU time it used (user + system)."""
    client = DaemonClient(path, keep_alive=True, timeout=120)
    while True:
        order = orders.recv()
        if order is None:
            break
        method, target, body, until = order
        latencies = []
        failures = 0
        cpu = time.process_time()
        while time.perf_counter() < until:
            started = time.perf_counter()
            status, _data = client.raw(method, target, body)
            latencies.append(time.perf_counter() - started)
            failures += status != 200
        out.send((latencies, failures, time.process_time() - cpu))
    client.close()


class Clients:
    """``count`` client processes (forked once, each with its keep-alive connection) that run
    slices of one request kind on command."""

    def __init__(self, path: str, count: int, daemon_pid: int) -> None:
        context = multiprocessing.get_context("fork")
        self.daemon_pid = daemon_pid
        self.orders, self.results, self.procs = [], [], []
        for _ in range(count):
            order_r, order_w = context.Pipe(duplex=False)
            result_r, result_w = context.Pipe(duplex=False)
            proc = context.Process(target=_worker, args=(path, order_r, result_w))
            proc.start()
            self.orders.append(order_w)
            self.results.append(result_r)
            self.procs.append(proc)

    def slice(self, method: str, target: str, body: Any, seconds: float) -> dict[str, Any]:
        """All clients send the request for ``seconds``: wall time, requests, latencies and
        the CPU time the daemon and the clients used in that time."""
        daemon_cpu = _cpu_ticks(self.daemon_pid)
        started = time.perf_counter()
        for orders in self.orders:
            orders.send((method, target, body, started + seconds))
        latencies: list[float] = []
        failures, client_cpu = 0, 0.0
        for results in self.results:
            got, failed, cpu = results.recv()
            latencies.extend(got)
            failures += failed
            client_cpu += cpu
        wall = time.perf_counter() - started
        if failures:
            raise SystemExit(f"{target}: {failures} requests failed")
        return {
            "wall": wall,
            "latencies": latencies,
            "daemon_cpu": (_cpu_ticks(self.daemon_pid) - daemon_cpu) * TICK_S,
            "client_cpu": client_cpu,
        }

    def close(self) -> None:
        for orders in self.orders:
            orders.send(None)
        for proc in self.procs:
            proc.join()


def summary(slices: list[dict[str, Any]]) -> dict[str, float]:
    """Requests/s, cost per request (wall / requests), p50/p99 and CPU per request, over
    ``slices`` together."""
    latencies = sorted(x for s in slices for x in s["latencies"])
    wall = sum(s["wall"] for s in slices)
    return {
        "requests": len(latencies),
        "rate": len(latencies) / wall,
        "cost_s": wall / len(latencies),
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "daemon_cpu_s": sum(s["daemon_cpu"] for s in slices) / len(latencies),
        "client_cpu_s": sum(s["client_cpu"] for s in slices) / len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="all three phases together")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--baseline-seconds", type=float, default=4.0)
    parser.add_argument(
        "--pairs", type=int, default=10, help="ping/token pairs of slices (2/3 of --seconds)"
    )
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
        ping = ("GET", "/v1/ping", None)
        token = ("POST", "/v1/token", {"sigstruct": b64(sig).decode()})
        pairs = max(1, args.pairs)
        each = args.seconds / 3 / pairs  # ping and token: 2/3 of the time, in pairs of slices
        clients = Clients(str(socket_path), args.clients, daemon.pid)
        try:
            slices: dict[str, list[dict[str, Any]]] = {"ping": [], "token": []}
            for i in range(pairs):
                # the pair's order alternates, so drift favours neither side
                for name in ("ping", "token") if i % 2 == 0 else ("token", "ping"):
                    method, target, body = ping if name == "ping" else token
                    slices[name].append(clients.slice(method, target, body, each))
            run_slice = clients.slice("POST", "/v1/run", run_body, args.seconds / 3)
        finally:
            clients.close()
        results = {
            "ping": summary(slices["ping"]),
            "token": summary(slices["token"]),
            "run": summary([run_slice]),
        }
    finally:
        daemon.terminate()
        daemon.wait(60)
        log.close()
    cpus = os.cpu_count()
    print(f"sgxlaunchd, {args.clients} concurrent clients, {args.seconds:.0f} s ({cpus} CPUs)")
    header = (
        "operation",
        "requests",
        "req/s",
        "cost/req",
        "p50",
        "p99",
        "daemon CPU",
        "client CPU",
    )
    print(f"{header[0]:<10} " + " ".join(f"{h:>11}" for h in header[1:]))
    for name, r in results.items():
        print(
            f"{name:<10} {r['requests']:>11} {r['rate']:>11.1f} {r['cost_s'] * 1e3:>9.3f}ms "
            f"{r['p50_s'] * 1e3:>9.3f}ms {r['p99_s'] * 1e3:>9.3f}ms "
            f"{r['daemon_cpu_s'] * 1e6:>9.0f}us {r['client_cpu_s'] * 1e6:>9.0f}us"
        )
    print(
        "(CPU per request: user + system; the daemon's from /proc/<pid>/stat; the clients' summed)"
    )
    rate, inproc_rate = results["run"]["rate"], limit["launch_rate"]
    launch_ratio = rate / inproc_rate
    inproc_mint = limit["mint_s"]
    print(
        f"in-process (same run): {inproc_rate:.1f} launches/s, "
        f"token mint {inproc_mint * 1e3:.3f} ms"
    )
    verdict = "PASS" if launch_ratio >= 0.5 else "FAIL"
    print(
        f"launches: daemon {rate:.1f}/s vs in-process {inproc_rate:.1f}/s "
        f"= {launch_ratio:.2f} (target >= 0.5) {verdict}"
    )
    ratios = []
    for p, t in zip(slices["ping"], slices["token"], strict=True):
        noop_i = p["wall"] / len(p["latencies"])
        ratios.append((t["wall"] / len(t["latencies"])) / (inproc_mint + 1.5 * noop_i))
    mint_ratio = statistics.median(ratios)
    noop, mint = results["ping"]["cost_s"], results["token"]["cost_s"]
    mint_limit = inproc_mint + 1.5 * noop
    print(
        "token mint / (in-process mint + 1.5 x no-op), each pair of slices: "
        + " ".join(f"{r:.2f}" for r in ratios)
    )
    verdict = "PASS" if mint_ratio <= 1 else "FAIL"
    print(
        f"token mint: daemon {mint * 1e3:.3f} ms vs in-process {inproc_mint * 1e3:.3f} ms "
        f"+ 1.5 x no-op {noop * 1e3:.3f} ms = {mint_limit * 1e3:.3f} ms (all slices: ratio "
        f"{mint / mint_limit:.2f}); median of the pairs' ratios {mint_ratio:.2f} "
        f"(target <= 1) {verdict}"
    )
    return 0 if launch_ratio >= 0.5 and mint_ratio <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
