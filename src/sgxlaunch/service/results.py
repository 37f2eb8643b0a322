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
WARNINGS = "sgxlaunch_warnings"
"""Attribute under which an error carries the warnings of its operation across the daemon."""
WARNING_HEADER = "Sgxlaunch-Warning"
"""A response header, once per warning the command line prints on stderr for the operation
(``sgxlaunch: warning: …``), its text as a JSON string (ASCII)."""


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


def attach_warnings(exc: BaseException, warnings: list[str]) -> None:
    """Let ``exc`` carry the warnings its operation raised (read back with :func:`warnings_of`)."""
    setattr(exc, WARNINGS, list(warnings))


def warnings_of(exc: BaseException) -> list[str]:
    value = getattr(exc, WARNINGS, None)
    return [str(w) for w in value] if isinstance(value, list) else []


def log_warnings(problems: list[str]) -> list[str]:
    """``run``'s warnings: launch-log records that could not be written (the driver went on in
    permissive mode, or refused the launch in owner mode)."""
    return [f"the attempt was not logged: {problem}" for problem in problems]


def failure_result(exc: BaseException) -> dict[str, Any] | None:
    value = getattr(exc, FAILURE_RESULT, None)
    return value if isinstance(value, dict) else None


__all__ = [
    "WARNING_HEADER",
    "attach",
    "attach_warnings",
    "denial_result",
    "failure_result",
    "log_warnings",
    "refusal_result",
    "warnings_of",
]
