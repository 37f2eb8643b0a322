"""Quotes through sgxlaunchd (issue 19's quoting enclave): the TARGETINFO, a quote of the example
enclave launched in the daemon that dcap-qvl verifies under the machine's root, and refusals."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

import sgxlaunch
from sgxlaunch.arch import TargetInfo
from sgxlaunch.attest import Collateral, TrustAnchor, verify_quote
from sgxlaunch.attest.pcs import EmulatedPcs
from sgxlaunch.formats.quote import ReportBody
from sgxlaunch.service.client import RemoteError, b64
from sgxlaunch.store import FileMachine
from tests.support.service import start_daemon


def test_quote_through_the_daemon_verifies(tmp_path: Path) -> None:
    home, machine = tmp_path / "home", tmp_path / "machine" / "machine.json"
    with sgxlaunch.create_platform(home, machine):  # permissive: the PCE and QE may launch
        pass
    image_path = tmp_path / "hello.sgxs"
    image_path.write_bytes(sgxlaunch.example_image())
    sig = sgxlaunch.sign(sgxlaunch.generate_key(), image=str(image_path), isvprodid=1, isvsvn=1)
    debug = sgxlaunch.sign(
        sgxlaunch.generate_key(), image=str(image_path), isvprodid=1, isvsvn=1, debug=True
    )
    daemon = start_daemon(home, machine, tmp_path / "d.sock")
    try:
        client = daemon.client()
        target = bytes.fromhex(client.call("GET", "/v1/quote/target-info")["target_info"])
        assert len(target) == TargetInfo.SIZE
        body = {
            "image": b64(image_path.read_bytes()),
            "sigstruct": b64(sig.to_bytes()),
            "reportdata": "00ff",
        }
        got = client.call("POST", "/v1/quote", body)
        quote = base64.b64decode(got["quote"])
        assert got["size"] == len(quote) and got["sha256"] == hashlib.sha256(quote).hexdigest()
        # A REPORT made elsewhere (not by EREPORT on this CPU for its QE) is refused by the QE.
        with pytest.raises(RemoteError) as refused:
            client.call("POST", "/v1/quote", {"report": b64(bytes(432))})
        assert refused.value.exit_code in (1, 2)
        # Quoted enclaves must be non-debug.
        with pytest.raises(RemoteError, match="debug"):
            client.call("POST", "/v1/quote", {**body, "sigstruct": b64(debug.to_bytes())})
        # A report and an image at once is refused, naming the field.
        with pytest.raises(RemoteError) as both:
            client.call("POST", "/v1/quote", {**body, "report": b64(bytes(432))})
        assert both.value.remote_fields["field"] == "report"
    finally:
        assert daemon.stop() == 0
    pcs = EmulatedPcs(FileMachine(machine))
    now = datetime.now(UTC)
    verified = verify_quote(
        quote,
        Collateral.from_bytes(pcs.collateral(now)),
        now,
        anchor=TrustAnchor.from_certificate(pcs.root_der()),
    )
    report = verified.quote.body
    assert isinstance(report, ReportBody)
    assert report.reportdata == bytes.fromhex("00ff").ljust(64, b"\0")
    assert report.mrenclave == sgxlaunch.measure_image(str(image_path))
