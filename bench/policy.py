"""Benchmark: launch-policy decisions/s at 10, 10 000 and 100 000 rules, and loading time.

Each policy is generated deterministically: 1 % deny rules (MRSIGNER + ISVPRODID + one-value
ISVSVN range, overlapping allow rules; none at 10 rules, where one would be 10 %), and allow
rules in a fixed pattern of 60 % MRSIGNER + ISVPRODID + ISVSVN range, 25 % MRENCLAVE and 15 %
MRSIGNER + ISVFAMILYID. Queries are 50 % hits (built
from a random allow rule, so they reach a rule through an index; a few are then denied) and
50 % misses (unknown MRSIGNER and MRENCLAVE). Decisions go through
:meth:`sgxlaunch.policy.PolicyIndex.evaluate`, the path the launch enclave uses.

Prints decisions/s per size next to the limit measured in the same run (a bare ``dict.get``
per query over the same keys), ``ratio <x>`` = rate at 100 000 rules / rate at 10 rules
(target ≥ 0.5), and the time to verify and load the 100 000-rule signed policy (envelope parse,
2-of-3 signature check over the exact payload, strict parse, rollback/expiry checks, index
build), next to a bare ``json.loads`` of the same payload.

Usage: ``python bench/policy.py [--seconds 1.0] [--queries 20000]``
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    EnclaveIdentity,
    LaunchPolicy,
    MemoryStore,
    OwnerRoot,
    PolicyIndex,
    PrivateKeySigner,
    install_root,
    load_state,
    sign_payload,
)

TARGET = 0.5
NOW = datetime(2026, 11, 26, tzinfo=UTC)
SIZES = (10, 10_000, 100_000)


def _b(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little")


def make_policy(rules: int, seed: int) -> dict[str, Any]:
    """A policy document of ``rules`` rules (1 % of them deny rules)."""
    rng = random.Random(seed)
    deny_count = rules // 100  # 1 % (none at 10 rules: one would be 10 %)
    allow_count = rules - deny_count
    allow: list[dict[str, Any]] = []
    for i in range(allow_count):
        kind = i % 20  # 12/20 signer+prodid+svn, 5/20 mrenclave, 3/20 signer+family
        if kind < 12:
            low = rng.randrange(0, 100)
            allow.append(
                {
                    "id": f"a{i}",
                    "mrsigner": _b(rng, 32).hex(),
                    "isvprodid": rng.randrange(0, 1 << 16),
                    "isvsvn": {"min": low, "max": low + rng.randrange(0, 100)},
                }
            )
        elif kind < 17:
            allow.append({"id": f"a{i}", "mrenclave": _b(rng, 32).hex()})
        else:
            allow.append({"id": f"a{i}", "mrsigner": _b(rng, 32).hex(), "isvfamilyid": "00" * 16})
    deny: list[dict[str, Any]] = []
    signer_rules = [r for r in allow if "isvprodid" in r]
    for i in range(deny_count):
        target = rng.choice(signer_rules)
        low = target["isvsvn"]["min"]
        deny.append(
            {
                "id": f"d{i}",
                "mrsigner": target["mrsigner"],
                "isvprodid": target["isvprodid"],
                "isvsvn": {"min": low, "max": low},
            }
        )
    share = sum("isvsvn" in r for r in allow + deny) / rules
    assert share >= 0.5, share
    return {
        "spec_version": "1",
        "version": 1,
        "expires": "2027-11-26T00:00:00Z",
        "allow": allow,
        "deny": deny,
    }


def make_queries(doc: dict[str, Any], count: int, seed: int) -> list[EnclaveIdentity]:
    """``count`` queries: half hits built from allow rules, half misses."""
    rng = random.Random(seed)
    allow = doc["allow"]
    queries = []
    for i in range(count):
        if i % 2 == 0:
            rule = rng.choice(allow)
            svn = rng.randrange(0, 200)
            if "isvsvn" in rule:
                svn = rng.randrange(rule["isvsvn"]["min"], rule["isvsvn"]["max"] + 1)
            queries.append(
                EnclaveIdentity(
                    mrenclave=bytes.fromhex(rule["mrenclave"])
                    if "mrenclave" in rule
                    else _b(rng, 32),
                    mrsigner=bytes.fromhex(rule["mrsigner"]) if "mrsigner" in rule else _b(rng, 32),
                    isvprodid=rule.get("isvprodid", rng.randrange(1 << 16)),
                    isvsvn=svn,
                    flags=0x4,
                    xfrm=0x3,
                )
            )
        else:
            queries.append(
                EnclaveIdentity(
                    mrenclave=_b(rng, 32),
                    mrsigner=_b(rng, 32),
                    isvprodid=rng.randrange(1 << 16),
                    isvsvn=rng.randrange(200),
                    flags=0x4,
                    xfrm=0x3,
                )
            )
    rng.shuffle(queries)
    return queries


def rate(fn: Any, queries: list[EnclaveIdentity], seconds: float) -> float:
    """Calls of ``fn`` per second over ``queries``, repeated for at least ``seconds``."""
    done = 0
    start = time.perf_counter()
    while True:
        for q in queries:
            fn(q)
        done += len(queries)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--queries", type=int, default=20_000, help="distinct queries")
    args = parser.parse_args(argv)

    rates: dict[int, float] = {}
    docs: dict[int, dict[str, Any]] = {}
    for size in SIZES:
        doc = make_policy(size, seed=size)
        docs[size] = doc
        policy = LaunchPolicy.from_payload(json.dumps(doc).encode())
        index = PolicyIndex(policy)
        queries = make_queries(doc, args.queries, seed=size + 1)
        decisions = [index.evaluate(q, NOW) for q in queries]
        allowed = sum(d.allowed for d in decisions)
        # The limit: one bare dict lookup per query on the same keys.
        keys = {bytes.fromhex(r["mrenclave"]): r for r in doc["allow"] if "mrenclave" in r}
        limit = rate(lambda q, k=keys: k.get(q.mrenclave), queries, args.seconds)
        rates[size] = rate(lambda q, i=index: i.evaluate(q, NOW), queries, args.seconds)
        print(
            f"{size:>7} rules: {rates[size]:>10,.0f} decisions/s  "
            f"(limit: bare dict.get {limit:>12,.0f}/s, {rates[size] / limit:.3f} of it; "
            f"{allowed / len(queries):.1%} of queries allowed)"
        )
    ratio = rates[SIZES[-1]] / rates[SIZES[0]]

    # Verify and load the largest signed policy through the trusted state.
    keys3 = [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)]
    root = OwnerRoot.create(
        version=1,
        expires=NOW + timedelta(days=365),
        threshold=2,
        keys=[k.public_key for k in keys3],
    )
    store = MemoryStore()
    install_root(store, sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), keys3).to_bytes(), NOW)
    payload = LaunchPolicy.from_payload(json.dumps(docs[SIZES[-1]]).encode()).to_payload()
    envelope = sign_payload(POLICY_PAYLOAD_TYPE, payload, keys3[:2]).to_bytes()
    state = load_state(store)
    start = time.perf_counter()
    new_state, update = state.install_policy(envelope, NOW)
    install_s = time.perf_counter() - start
    update.apply(store)
    start = time.perf_counter()
    reloaded = load_state(store)
    load_s = time.perf_counter() - start
    assert reloaded.policy == new_state.policy
    start = time.perf_counter()
    json.loads(payload)
    bare_s = time.perf_counter() - start

    print(
        f"verify+install {SIZES[-1]:,}-rule signed policy "
        f"({len(envelope) / 2**20:.1f} MiB envelope): {install_s:.3f} s; "
        f"reload from store: {load_s:.3f} s (limit: bare json.loads of the payload {bare_s:.3f} s)"
    )
    print(f"ratio {ratio:.3f}  (target >= {TARGET})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
