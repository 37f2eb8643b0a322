"""Benchmark of the owner's launch path, end to end, on an in-memory Platform.

(a) Tokens/s through the owner launch enclave: ECALL MINT (policy evaluation inside the
    enclave, EREPORT, EGETKEY, CMAC) with a signed policy of 10 000 rules, queries for enclaves
    the policy allows. The limit printed beside it: the same policy decision alone
    (``TrustedState.evaluate``) outside the enclave, and one AES-CMAC over 192 bytes.
(b) The latency owner mode adds to one INIT: ``Platform.run`` of the same small enclave in
    permissive mode (mainline) and in owner mode (mint + ENCLAVE_INIT_TOKEN), both with the
    launch log on; median of N runs.

Run: ``.venv/bin/python bench/launch.py [--rules 10000] [--tokens 2000] [--runs 200]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, program_image
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.driver import as_sgxs_image
from sgxlaunch.launch.enclave import Call, sign_launch_enclave
from sgxlaunch.launch.platform import Platform, PlatformConfig
from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    EnclaveIdentity,
    MemoryStore,
    OwnerRoot,
    PrivateKeySigner,
    install_root,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument
from sgxlaunch.sigstruct import RsaKeySigner, mrsigner_of, sign

VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Hello(EnclaveProgram):
    """A trivial enclave to launch."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        return data


def rsa_key(name: str) -> RsaKeySigner:
    key = load_pem_private_key((VECTORS / name).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return RsaKeySigner(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    author = rsa_key("generated/case2_prodid_svn_debug.key.pem")
    le_key = rsa_key("kselftest/sign_key.pem")
    image = program_image(Hello)
    body = Sigstruct(
        attributes=Attributes(flags=int(AttributeFlag.MODE64BIT), xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=7,
        isvsvn=1,
        enclavehash=image.mrenclave(),
    )
    sig = sign(body, author)
    sgxs = as_sgxs_image(image)

    keys = [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)]
    root = OwnerRoot.create(
        version=1,
        expires=NOW + timedelta(days=365),
        threshold=2,
        keys=[k.public_key for k in keys],
    )
    root_env = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), keys[:2]).to_bytes()
    rules = [{"id": "author", "mrsigner": sig.mrsigner.hex(), "isvprodid": 7}]
    for i in range(1, args.rules):
        rules.append(
            {
                "id": f"r{i}",
                "mrsigner": os.urandom(32).hex(),
                "isvprodid": i % 65536,
                "isvsvn": {"min": 0, "max": 9},
            }
            if i % 2
            else {"id": f"r{i}", "mrenclave": os.urandom(32).hex()}
        )
    policy_doc = {
        "spec_version": "1",
        "version": 1,
        "expires": "2027-06-01T00:00:00Z",
        "allow": rules,
        "deny": [],
    }
    policy_env = sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(policy_doc), keys[:2]).to_bytes()
    mode_doc = ModeDocument.create(
        version=1,
        expires=NOW + timedelta(days=7),
        mode="owner",
        le_mrsigner=mrsigner_of(le_key.public_key()),
    )
    mode_env = sign_payload(MODE_PAYLOAD_TYPE, mode_doc.to_payload(), keys[:2]).to_bytes()

    def clock() -> datetime:
        return NOW

    store = MemoryStore()
    install_root(store, root_env, NOW)
    platform = Platform.create(
        store,
        seed=b"bench-platform-seed-000000000000",
        config=PlatformConfig(epc_size=8 << 20),
        clock=clock,
    )
    platform.set_launch_enclave(sign_launch_enclave(root_env, le_key))
    platform = Platform.open(store, clock=clock)
    t0 = time.perf_counter()
    platform.install_policy(policy_env)
    t_install = time.perf_counter() - t0

    # (b) permissive first (no mode document yet), then owner.
    def median_run(p: Platform) -> float:
        samples = []
        for _ in range(args.runs):
            t = time.perf_counter()
            result = p.run(sgxs, sig)
            samples.append(time.perf_counter() - t)
            assert result.enclave is not None
            result.enclave.close()
        return statistics.median(samples)

    t_permissive = median_run(platform)
    platform.set_mode(mode_env)
    platform = Platform.open(store, clock=clock)
    t_owner = median_run(platform)

    # (a) tokens/s through the launch enclave.
    request = json.dumps(
        {
            "sigstruct": base64.b64encode(sig.to_bytes()).decode(),
            "flags": int(AttributeFlag.MODE64BIT),
            "xfrm": 0x3,
            "now": "2026-11-26T12:00:00Z",
        }
    ).encode()
    le = platform.le
    assert le is not None
    t0 = time.perf_counter()
    for _ in range(args.tokens):
        reply = json.loads(le.ecall(int(Call.MINT), request))
        assert reply["allowed"]
    t_mint = (time.perf_counter() - t0) / args.tokens

    state = platform.state
    assert state is not None
    identity = EnclaveIdentity.from_sigstruct(sig)
    t0 = time.perf_counter()
    for _ in range(args.tokens):
        assert state.evaluate(identity, NOW).allowed
    t_eval = (time.perf_counter() - t0) / args.tokens
    key = os.urandom(16)
    t0 = time.perf_counter()
    for _ in range(args.tokens):
        cmac128(key, bytes(192))
    t_cmac = (time.perf_counter() - t0) / args.tokens

    print(
        f"policy: {args.rules} rules ({len(policy_env) / 2**20:.1f} MiB signed envelope); "
        f"verified and installed through the launch enclave in {t_install:.2f} s"
    )
    print(
        f"(a) tokens through the owner launch enclave: {1 / t_mint:9,.0f} tokens/s "
        f"({t_mint * 1e6:.0f} µs each)"
    )
    print(
        f"    limit: policy decision alone {1 / t_eval:9,.0f}/s; AES-CMAC(192 B) "
        f"{1 / t_cmac:9,.0f}/s; ratio to the decision alone {t_eval / t_mint:.3f}"
    )
    print(
        f"(b) one INIT, median of {args.runs}: permissive {t_permissive * 1e3:.2f} ms, "
        f"owner {t_owner * 1e3:.2f} ms: owner mode adds {(t_owner - t_permissive) * 1e3:.2f} ms "
        f"({t_owner / t_permissive:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
