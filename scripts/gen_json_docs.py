"""Write docs/json.md: the JSON contract, with one success and one failure example per command.

The examples come from running every ``--json`` command in the scenario of
``tests/support/json_cases.py`` (the same runs the schema test validates). Run from the
repository root: ``python scripts/gen_json_docs.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import shared_vectors  # noqa: E402
from tests.support.json_cases import run_cases  # noqa: E402

HEAD = """# The JSON contract of `--json`

Every command that takes `--json` prints **exactly one JSON object** on stdout, on success and on
failure. A script reads stdout only; stderr stays for the person at the terminal: under `--json`
it is empty on success except for warnings (`sgxlaunch: warning: …`, such as a document that
expires within a day), and on failure it carries the error as the command prints it without
`--json` (`sgxlaunch: error: …`, or click's usage text for an option or a file click rejects),
the same words as `error.message` and `error.detail`. Status lines (`wrote FILE`, `signed with
KEYID`, notes) and progress bars are not printed under `--json`. The object's shape is versioned
by `schema` and checked by the test suite against the JSON Schema shipped in the package,
`sgxlaunch/cli/output.schema.json` (`importlib.resources.files("sgxlaunch.cli")`):

```
{"schema": "sgxlaunch/1", "command": "<the command>", "ok": true,  "result": {...}}
{"schema": "sgxlaunch/1", "command": "<the command>", "ok": false,
 "error": {"kind": ..., "message": ..., "detail": [...], "exit_code": 1 | 2, ...},
 "result": {...}}   # only when a failure still has something to report
```

- `ok` is `true` exactly when the exit code is 0.
- `error.kind` says who is at fault: `usage` and `malformed_input` (exit 2), `verification_failed`
  and `denied` (exit 1), `launch_failed` (exit 1), and `refused` (exit 2): sgxlaunchd refused the
  request itself, before the platform saw it, with its `reason` (`forbidden`, `other_platform`,
  `too_large`, `rate_limited`, `unavailable`, `timeout`, `not_found`, `method_not_allowed`) and,
  where waiting helps, `retry_after` (seconds; docs/service.md). `message` is the message as
  stderr shows it (one line, unless it quotes a file name or an outside library's words that
  hold line breaks); `detail` the lines after it. Facts the error carries are added beside them
  when known: `source`, `field`, `offset` (malformed input), `check`, `expected`, `found`
  (verification), `rule` (denial), `step`, `errno`, `status` (launch). Errors click reports
  before the command runs (an unknown option, a missing file) are `usage` errors in the same
  shape.
- A failure that still has something to say carries `result` too: `run` and `policy explain`
  (the decision and its reasons), `log verify` (`first_bad_record`).
- A command that writes a file names it in `result.output` (as given on the command line) with
  what identifies its contents: an MRSIGNER (`key generate`, `key public`), an MRENCLAVE and
  MRSIGNER (`sign`, `catsig`, with the SHA-256 of the file), an MRENCLAVE (`example`, `convert`,
  `gendata`, `platform le-image`), a `digest`. A command that signs a document (`owner sign`,
  `owner mode sign`, `policy sign`, `quote appraisal sign`, `recovery sign`) reports its
  `type` (`owner-root`, `launch-policy`, `platform-mode`, `quote-appraisal`, `recovery`),
  what the document says (version, expiry, ...), `digest` (SHA-256 of the exact payload bytes
  the signatures cover: the digest installing it reports), `signed_with` (the keys of this run)
  and `signed_by` (every key id the envelope now holds). `policy new`, `policy allow` and
  `policy deny` report the `digest` of the document written, the digest the policy carries once
  signed and installed. None of these commands writes or changes anything when it is refused.
- Types: byte strings are lower-case hex; integers are JSON numbers; times are RFC 3339 UTC
  (`2027-01-31T00:00:00Z`). Every attributes object `{flags, xfrm}` also carries `flags_hex`
  and `xfrm_hex` (64-bit values exceed what some JSON readers hold exactly).
- Every denial reason, in `run`, `policy explain` and `log show`, is
  `{"rule": <id or null>, "field": ..., "expected": ..., "found": ...}`.
- `schema` changes (to `sgxlaunch/2`) only with an incompatible change; new keys may appear
  within a version.

The examples below were produced by `python scripts/gen_json_docs.py` (keys, times and
identifiers differ from run to run).
"""


def main() -> int:
    vectors = str(shared_vectors())
    out = [HEAD]
    with tempfile.TemporaryDirectory() as tmp:
        examples: dict[str, dict[bool, tuple[str, str]]] = {}
        for case in run_cases(Path(tmp)):
            text = json.dumps(case.document(), indent=2)
            text = text.replace(tmp + "/", "").replace(vectors + "/", "vectors/")
            examples.setdefault(case.command, {})[case.ok] = (
                f"$ sgxlaunch {' '.join(case.argv)}".replace(tmp + "/", "").replace(
                    vectors + "/", "vectors/"
                ),
                text,
            )
    out.append("\n## Commands\n")
    for command in sorted(examples):
        out.append(f"\n### `sgxlaunch {command}`\n")
        for ok in (True, False):
            if ok in examples[command]:
                argv, text = examples[command][ok]
                out.append(f"\n{'Success' if ok else 'Failure'}:\n\n```\n{argv}\n{text}\n```\n")
    (ROOT / "docs" / "json.md").write_text("".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
