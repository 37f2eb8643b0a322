"""Layer 6: the platform owner's launch policy — bytes and ``now`` in, decisions out.

* :mod:`~sgxlaunch.policy.keys` — policy-signing keys (Ed25519, ECDSA P-256, RSA-PSS ≥ 3072),
  key ids, the :class:`PolicySigner` protocol.
* :mod:`~sgxlaunch.policy.envelope` — DSSE envelopes, PAE, distinct-key thresholds.
* :mod:`~sgxlaunch.policy.root` — the owner root (k-of-n keys, version, expiry).
* :mod:`~sgxlaunch.policy.model` — the launch policy document (allow/deny rules).
* :mod:`~sgxlaunch.policy.control` — platform-control documents (owner-signed launch-control
  mode and launch-enclave signer).
* :mod:`~sgxlaunch.policy.evaluate` — indexed evaluation with reasons.
* :mod:`~sgxlaunch.policy.state` — the trusted-state machine (rollback, expiry, thresholds,
  rotation) over a :class:`Store`.

No file system, clock, environment or terminal is used here; see ``docs/policy.md``.
"""

from sgxlaunch.policy.control import (
    MAX_MODE_ENVELOPE_SIZE,
    MAX_MODE_SIZE,
    MODE_PAYLOAD_TYPE,
    MODES,
    ModeDocument,
    PlatformMismatch,
)
from sgxlaunch.policy.envelope import Envelope, Signature, pae, sign_payload, verify_threshold
from sgxlaunch.policy.evaluate import (
    Decision,
    EnclaveIdentity,
    PolicyIndex,
    Reason,
    evaluate,
)
from sgxlaunch.policy.keys import (
    ECDSA_P256,
    ED25519,
    RSA_PSS,
    SCHEMES,
    PolicySigner,
    PrivateKeySigner,
    PublicKey,
)
from sgxlaunch.policy.model import (
    MAX_POLICY_SIZE,
    MAX_RULES,
    POLICY_PAYLOAD_TYPE,
    LaunchPolicy,
    Rule,
)
from sgxlaunch.policy.root import ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.state import (
    MODE_KEY,
    POLICY_KEY,
    ROOT_KEY,
    TrustedState,
    Update,
    install_mode,
    install_policy,
    install_root,
    load_state,
)
from sgxlaunch.policy.store import MemoryStore, Store

__all__ = [
    "ECDSA_P256",
    "ED25519",
    "MAX_MODE_ENVELOPE_SIZE",
    "MAX_MODE_SIZE",
    "MAX_POLICY_SIZE",
    "MAX_RULES",
    "MODES",
    "MODE_KEY",
    "MODE_PAYLOAD_TYPE",
    "POLICY_KEY",
    "POLICY_PAYLOAD_TYPE",
    "ROOT_KEY",
    "ROOT_PAYLOAD_TYPE",
    "RSA_PSS",
    "SCHEMES",
    "Decision",
    "EnclaveIdentity",
    "Envelope",
    "LaunchPolicy",
    "MemoryStore",
    "ModeDocument",
    "OwnerRoot",
    "PlatformMismatch",
    "PolicyIndex",
    "PolicySigner",
    "PrivateKeySigner",
    "PublicKey",
    "Reason",
    "Rule",
    "Signature",
    "Store",
    "TrustedState",
    "Update",
    "evaluate",
    "install_mode",
    "install_policy",
    "install_root",
    "load_state",
    "pae",
    "sign_payload",
    "verify_threshold",
]
