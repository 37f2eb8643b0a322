"""sgxlaunch: a faithful software SGX platform with owner-controlled enclave launch.

``import sgxlaunch`` is the task-level API (recipes in ``docs/api.md``):

* the author: :func:`measure_image`, :func:`read_image`, :func:`inspect_image`,
  :func:`generate_key`, :func:`load_key`, :func:`load_public_key`, :func:`mrsigner_of`,
  :func:`sigstruct_body`, :func:`sign`, :func:`read_sigstruct`, :func:`verify`;
* the owner: :func:`generate_owner_key`, :func:`owner_root`, :func:`sign_policy`,
  :func:`sign_mode`, :func:`sign_launch_enclave`;
* the platform: :class:`Platform`, :func:`create_platform`, :func:`open_platform`,
  :func:`ephemeral_platform`, :func:`run` (→ :class:`Launch`), :func:`make_quote` (a DCAP
  quote from the platform's quoting enclave; :class:`Report`, :class:`TargetInfo`);
* enclave code: :class:`EnclaveProgram`, :class:`EnclaveContext`, the example
  :class:`HelloEnclave` and :func:`example_image`;
* the errors (one hierarchy, :class:`SgxlaunchError` at its root) and ``__version__``.

Names are resolved on first use (module ``__getattr__``), so importing the package (and
starting the command line) loads none of the heavy modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgxlaunch._api import (
        Launch,
        create_platform,
        ephemeral_platform,
        generate_key,
        generate_owner_key,
        inspect_image,
        load_key,
        load_public_key,
        make_quote,
        measure_image,
        mrsigner_of,
        open_platform,
        owner_root,
        read_image,
        read_sigstruct,
        run,
        sign,
        sign_launch_enclave,
        sign_mode,
        sign_policy,
        sigstruct_body,
        verify,
    )
    from sgxlaunch.arch import Attributes, Report, Sigstruct, TargetInfo
    from sgxlaunch.cpu import EnclaveContext, EnclaveProgram
    from sgxlaunch.errors import (
        Expired,
        MalformedInput,
        MeasurementMismatch,
        PolicyDenied,
        QuotientInvalid,
        ReportRefused,
        Rollback,
        SgxlaunchError,
        SignatureInvalid,
        SignerMismatch,
        ThresholdNotMet,
        UsageError,
        VerificationFailed,
    )
    from sgxlaunch.example import HelloEnclave, example_image
    from sgxlaunch.formats.sgxs import SgxsImage
    from sgxlaunch.launch.platform import Platform, RunResult
    from sgxlaunch.policy import PolicySigner
    from sgxlaunch.sigstruct import EnclaveSigner

_API = (
    "Launch",
    "create_platform",
    "ephemeral_platform",
    "generate_key",
    "generate_owner_key",
    "inspect_image",
    "load_key",
    "load_public_key",
    "make_quote",
    "measure_image",
    "mrsigner_of",
    "open_platform",
    "owner_root",
    "read_image",
    "read_sigstruct",
    "run",
    "sign",
    "sign_launch_enclave",
    "sign_mode",
    "sign_policy",
    "sigstruct_body",
    "verify",
)
_ERRORS = (
    "Expired",
    "MalformedInput",
    "MeasurementMismatch",
    "PolicyDenied",
    "QuotientInvalid",
    "ReportRefused",
    "Rollback",
    "SgxlaunchError",
    "SignatureInvalid",
    "SignerMismatch",
    "ThresholdNotMet",
    "UsageError",
    "VerificationFailed",
)
_WHERE: dict[str, str] = {
    **dict.fromkeys(_API, "sgxlaunch._api"),
    **dict.fromkeys(_ERRORS, "sgxlaunch.errors"),
    "Attributes": "sgxlaunch.arch",
    "Report": "sgxlaunch.arch",
    "Sigstruct": "sgxlaunch.arch",
    "TargetInfo": "sgxlaunch.arch",
    "EnclaveContext": "sgxlaunch.cpu",
    "EnclaveProgram": "sgxlaunch.cpu",
    "HelloEnclave": "sgxlaunch.example",
    "example_image": "sgxlaunch.example",
    "SgxsImage": "sgxlaunch.formats.sgxs",
    "Platform": "sgxlaunch.launch.platform",
    "RunResult": "sgxlaunch.launch.platform",
    "PolicySigner": "sgxlaunch.policy",
    "EnclaveSigner": "sgxlaunch.sigstruct",
}

__all__ = [
    "Attributes",
    "EnclaveContext",
    "EnclaveProgram",
    "EnclaveSigner",
    "Expired",
    "HelloEnclave",
    "Launch",
    "MalformedInput",
    "MeasurementMismatch",
    "Platform",
    "PolicyDenied",
    "PolicySigner",
    "QuotientInvalid",
    "Report",
    "ReportRefused",
    "Rollback",
    "RunResult",
    "SgxlaunchError",
    "SgxsImage",
    "SignatureInvalid",
    "SignerMismatch",
    "Sigstruct",
    "TargetInfo",
    "ThresholdNotMet",
    "UsageError",
    "VerificationFailed",
    "__version__",
    "create_platform",
    "ephemeral_platform",
    "example_image",
    "generate_key",
    "generate_owner_key",
    "inspect_image",
    "load_key",
    "load_public_key",
    "make_quote",
    "measure_image",
    "mrsigner_of",
    "open_platform",
    "owner_root",
    "read_image",
    "read_sigstruct",
    "run",
    "sign",
    "sign_launch_enclave",
    "sign_mode",
    "sign_policy",
    "sigstruct_body",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("sgxlaunch")
        except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
            return "0+unknown"
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sgxlaunch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
