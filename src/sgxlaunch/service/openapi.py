"""The API's OpenAPI 3.1 document, built from the operation table (:data:`~sgxlaunch.service.
app.OPERATIONS`); served at ``/v1/openapi.json`` and committed as ``docs/openapi.json`` (a test
keeps them equal). Regenerate: ``python -m sgxlaunch.service.openapi > docs/openapi.json``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sgxlaunch.service.app import OPERATIONS
from sgxlaunch.service.results import WARNING_HEADER

_B64 = {"type": "string", "contentEncoding": "base64"}
_FD = {
    "type": "integer",
    "minimum": 0,
    "description": "Index of a descriptor passed on this connection (SCM_RIGHTS): a regular "
    "file open for reading.",
}
_SOURCE = {
    "type": "string",
    "description": "The caller's name for the input, used in error messages as the command "
    "line uses a file name.",
}


def _binary(name: str, what: str) -> dict[str, Any]:
    return {
        name: {**_B64, "description": f"{what} (base64)."},
        f"{name}_fd": {
            **_FD,
            "description": f"{what}, as a passed descriptor ({_FD['description']})",
        },
    }


_BODIES: dict[str, dict[str, Any]] = {
    "run": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("image", "The enclave image: an SGXS stream or an Intel SDK enclave"),
            **_binary("sigstruct", "The enclave's SIGSTRUCT (1808 bytes)"),
            **_binary("token", "An EINITTOKEN to use instead of asking the launch enclave"),
            "size": {"type": ["integer", "null"], "description": "Size of an UNSIZED image."},
            "input": {"type": "string", "description": "Input of ECALL 0 (shipped programs)."},
        },
        "description": "Exactly one of image / image_fd and of sigstruct / sigstruct_fd.",
    },
    "quote": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("report", "A 432-byte REPORT targeted at the quoting enclave"),
            **_binary("image", "An enclave whose program ships with sgxlaunch (the example)"),
            **_binary("sigstruct", "Its SIGSTRUCT (non-debug)"),
            "reportdata": {"type": "string", "description": "Up to 64 bytes as hex."},
        },
        "description": "A report (report / report_fd), or an image and its sigstruct.",
    },
    "token": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("sigstruct", "The SIGSTRUCT to mint a token for"),
            "attributes": {
                "type": "object",
                "required": ["flags", "xfrm"],
                "additionalProperties": False,
                "properties": {"flags": {"type": "integer"}, "xfrm": {"type": "integer"}},
                "description": "The ATTRIBUTES to run with (default: the SIGSTRUCT's own).",
            },
        },
    },
    "install_policy": {
        "type": "object",
        "additionalProperties": False,
        "properties": {**_binary("document", "The signed launch policy"), "source": _SOURCE},
    },
    "mode": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("document", "The signed platform-mode document"),
            "source": _SOURCE,
        },
    },
    "add_code_key": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("wrapped", "The wrapped code key (`sgxlaunch pcl wrap`)"),
            "source": _SOURCE,
        },
    },
    "take_ownership": {
        "type": "object",
        "additionalProperties": False,
        "properties": {**_binary("document", "The signed owner root envelope"), "source": _SOURCE},
    },
    "recover": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("document", "The recovery document (`sgxlaunch recovery sign`)"),
            "source": _SOURCE,
        },
    },
    "log_attest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["nonce"],
        "properties": {
            "nonce": {"type": "string", "description": "1 to 64 bytes as hex."},
            "from": {"type": "integer", "minimum": 0, "description": "First record to attest."},
        },
    },
    "launch_enclave": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_binary("sigstruct", "The launch enclave's SIGSTRUCT for the installed root"),
            "source": _SOURCE,
        },
    },
}

_QUERY: dict[str, list[dict[str, Any]]] = {
    "log_records": [
        {"name": "start", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
        },
    ],
    "log_export": [
        {
            "name": "from",
            "in": "query",
            "description": "First record to export (default 0).",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "log_follow": [
        {
            "name": "from",
            "in": "query",
            "description": "First record to send (default: only records appended from now on).",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
}

_WARNING = {
    "description": "Once per warning the command line prints on stderr for this operation "
    "(`sgxlaunch: warning: …`; run: a launch-log record that could not be written), as a JSON "
    "string.",
    "schema": {"type": "string"},
}

_STATUS = {
    "400": "A bad request (error kind usage or malformed_input, exit code 2).",
    "403": "The caller's uid and groups do not hold the operation's role (recorded; error kind "
    "refused, reason forbidden).",
    "408": "The request head or body did not arrive in time (refused, reason timeout).",
    "409": "The caller named another home or machine than the one served (refused, reason "
    "other_platform).",
    "413": "The body is over the limit (refused from Content-Length, unread; refused, reason "
    "too_large).",
    "422": "Refused on its merits (verification_failed, denied, launch_failed; exit code 1).",
    "429": "Too many owner operations from this uid (refused, reason rate_limited; Retry-After "
    "and retry_after).",
    "503": "Too many connections, or shutting down (refused, reason unavailable; Retry-After "
    "and retry_after).",
}


def _error_schema() -> dict[str, Any]:
    """The command line's error object (``sgxlaunch/cli/output.schema.json``): one shape, one
    definition."""
    from importlib import resources

    text = resources.files("sgxlaunch.cli").joinpath("output.schema.json").read_text()
    error: dict[str, Any] = json.loads(text)["$defs"]["error"]
    return error


@functools.cache
def openapi_document() -> dict[str, Any]:
    from sgxlaunch.cli._output import SCHEMA

    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "description": f"Role: {op.role}. The command line's `{op.command}`.",
            "x-sgxlaunch-role": op.role,
            "responses": {
                "200": {
                    "description": "Success: the command's JSON document.",
                    "content": {
                        "text/event-stream" if op.name == "log_follow" else "application/json": {
                            "schema": {"type": "string"}
                            if op.name == "log_follow"
                            else {"$ref": "#/components/schemas/Document"}
                        }
                    },
                },
                **{
                    code: {
                        "description": text,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Document"}
                            }
                        },
                    }
                    for code, text in _STATUS.items()
                },
            },
        }
        if op.name == "run":
            for code in ("200", "422"):
                entry["responses"][code]["headers"] = {WARNING_HEADER: _WARNING}
        if op.name in _BODIES:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _BODIES[op.name]}},
            }
        if op.name in _QUERY:
            entry["parameters"] = _QUERY[op.name]
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sgxlaunchd",
            "version": SCHEMA,
            "description": "The sgxlaunch platform as a service on a Unix socket "
            "(docs/service.md). Every body is the command line's JSON document (docs/json.md).",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Document": {
                    "type": "object",
                    "required": ["schema", "command", "ok"],
                    "properties": {
                        "schema": {"const": SCHEMA},
                        "command": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "result": {"type": "object"},
                        "error": {"$ref": "#/components/schemas/Error"},
                    },
                },
                "Error": _error_schema(),
            }
        },
    }


@functools.cache
def openapi_bytes() -> bytes:
    return (json.dumps(openapi_document(), indent=2) + "\n").encode()


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(openapi_bytes().decode())
