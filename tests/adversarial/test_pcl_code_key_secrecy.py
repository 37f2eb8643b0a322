"""The code key K never leaves the enclaves (issue 20): not into the home, the launch log, any
command's output (text or ``--json``) nor any error message — in raw bytes, hex (either case)
or base64 (standard or URL-safe, with or without padding).

Scanned: every file of the home after the whole command-line story of
``tests/support/pcl_cli.py`` (install, releases, a refusal by policy, an EINIT refusal), every
output it printed, and the errors of attacks made at the API level (a key wrapped for another
platform, a tampered wrapped key, a replayed and a forged release request)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgxlaunch.errors import SgxlaunchError
from sgxlaunch.pcl import crypto
from tests.support.codekeys import ask, by_signer, code_key, installed, release, requester, wrap
from tests.support.pcl_cli import Scenario, pcl_scenario
from tests.support.platform import Owner

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)


def secret_forms(key: bytes) -> list[bytes]:
    """K as it could leak: raw, hex (lower, upper), base64 (standard, URL-safe, unpadded)."""
    b64 = base64.b64encode(key)
    url = base64.urlsafe_b64encode(key)
    hexed = key.hex().encode()
    return [key, hexed, hexed.upper(), b64, url, b64.rstrip(b"="), url.rstrip(b"=")]


def assert_free_of(key: bytes, data: bytes | str, where: str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for form in secret_forms(key):
        assert form not in blob, f"the code key appears in {where} ({form[:8]!r}…)"


def _files(root: Path) -> Iterator[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return pcl_scenario()


def test_the_scan_finds_the_key_where_it_is(scenario: Scenario) -> None:
    """The scan's control: it does find K in the author's key file, and in each form."""
    key = scenario.code_key
    with pytest.raises(AssertionError, match="code key appears"):
        assert_free_of(key, (scenario.tmp / "code.key").read_bytes(), "the key file")
    for form in secret_forms(key):
        with pytest.raises(AssertionError):
            assert_free_of(key, b"..." + form + b"...", "a crafted blob")


def test_code_key_never_appears_in_the_home_the_log_or_any_output(scenario: Scenario) -> None:
    key = scenario.code_key
    files = list(_files(scenario.home))
    assert any(p.name.startswith("state.sqlite3") for p in files)
    for path in files:
        assert_free_of(key, path.read_bytes(), f"home file {path.name}")
    for index, text in enumerate(scenario.outputs):
        assert_free_of(key, text, f"command output {index}")
    records = scenario.records("log after revocation")
    assert any(r["kind"] == "code-key-release" for r in records)
    assert_free_of(key, json.dumps(records), "the launch log")
    # the release did happen: the protected program ran with K inside the enclave
    assert "owner" in scenario.results["run"].stdout


def test_code_key_never_appears_in_an_error_message() -> None:
    inst = installed(b"pcl-secrecy-errors-seed-0001")
    platform = inst.owner.platform()
    errors: list[SgxlaunchError] = []

    def expect_error(action: object) -> None:
        try:
            action()  # type: ignore[operator]
        except SgxlaunchError as exc:
            errors.append(exc)
        else:
            pytest.fail("the attack was not refused")

    # a key wrapped for another platform's launch enclave
    other = Owner(seed=b"pcl-secrecy-other-seed-00001")
    other.set_up_launch_enclave()
    elsewhere = wrap(other.platform(), inst.key, by_signer(inst.sig))
    expect_error(lambda: platform.add_code_key(elsewhere))
    # a wrapped key whose box was altered
    good = bytearray(wrap(platform, inst.key, by_signer(inst.sig)))
    good[-1] ^= 1
    expect_error(lambda: platform.add_code_key(bytes(good)))
    # a replayed request and one for a key id that K does not have
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    asked = ask(platform, enclave, inst.key_id)
    assert release(platform, asked, inst.key_id) == inst.key_id
    expect_error(lambda: release(platform, asked, inst.key_id))
    wrong = crypto.key_id(code_key(b"another key"))
    expect_error(lambda: release(platform, ask(platform, enclave, wrong), wrong))
    assert len(errors) == 4
    for exc in errors:
        text = "\n".join([str(exc), exc.message, *exc.detail, repr(exc)])
        assert_free_of(inst.key, text, f"{type(exc).__name__}: {exc.message}")
    for name, blob in inst.owner.store.snapshot().items():
        assert_free_of(inst.key, blob, f"home key {name}")
