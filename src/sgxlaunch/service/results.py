"""What a failed launch still reports beside its error, in the one shape the command line and the
daemon share (``docs/json.md``: ``run``'s failure ``result``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgxlaunch.arch import Sigstruct
    from sgxlaunch.driver import LoadFailed
    from sgxlaunch.errors import PolicyDenied

FAILURE_RESULT = "failure_result"
"""Attribute under which an error carries its failure ``result`` across the daemon."""


def denial_result(exc: PolicyDenied, mode: str, sig: Sigstruct) -> dict[str, Any]:
    """``run`` denied by the owner's policy."""
    return {
        "initialized": False,
        "mode": mode,
        "decision": "denied",
        "rule": exc.rule,
        "reasons": [dict(r) for r in exc.reasons],
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex(),
    }


def refusal_result(exc: LoadFailed, mode: str, sig: Sigstruct) -> dict[str, Any]:
    """``run`` refused by the driver or EINIT."""
    return {
        "initialized": False,
        "mode": mode,
        "decision": "refused",
        "step": exc.step,
        "errno": exc.errno_name,
        "sgx_status": None if exc.status is None else exc.status.name,
        "why": list(exc.detail),
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex(),
    }


def attach(exc: BaseException, result: dict[str, Any]) -> None:
    """Let ``exc`` carry its failure ``result`` (read back with :func:`failure_result`)."""
    setattr(exc, FAILURE_RESULT, result)


def failure_result(exc: BaseException) -> dict[str, Any] | None:
    value = getattr(exc, FAILURE_RESULT, None)
    return value if isinstance(value, dict) else None


__all__ = ["attach", "denial_result", "failure_result", "refusal_result"]
