"""``--json`` on the commands that write or sign a file, or change the machine: each result
says what was written, where, and the digests, and each is checked against what other commands
read back from the file, the home or the machine; a refusal prints the one error object and
changes nothing (docs/json.md)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from sgxlaunch.cli import load_all_commands, main
from sgxlaunch.policy.envelope import Envelope
from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import document_of, result_of

GEN = shared_vectors() / "generated"


def ok(*args: str | Path | int) -> Any:
    """The result of a ``--json`` command that must succeed (and print nothing else)."""
    out = run(*args, "--json")
    assert out.exit_code == 0, out.output
    assert out.stderr == "", out.stderr  # no status lines under --json
    return result_of(out)


def refused(*args: str | Path | int, code: int = 2) -> dict[str, Any]:
    """The error object of a ``--json`` command that must fail with ``code``."""
    out = run(*args, "--json")
    assert out.exit_code == code, out.output
    document = document_of(out)
    assert "result" not in document
    error: dict[str, Any] = document["error"]
    assert error["message"].splitlines()[0] in out.stderr
    return error


def payload_digest(path: Path) -> str:
    return hashlib.sha256(Envelope.from_bytes(path.read_bytes()).payload).hexdigest()


@dataclass
class Owner:
    tmp: Path
    root: Path
    keys: list[str]
    home: Path
    machine: Path
    le_key: Path


@pytest.fixture
def owner(tmp_path: Path) -> Owner:
    """A 2-of-3 owner root on a permissive platform with its launch enclave."""
    root = tmp_path / "root.json"
    made = run("owner", "init", "--keys", "3", "--threshold", "2", "--key-dir",
               tmp_path / "keys", "-o", root)  # fmt: skip
    assert made.exit_code == 0, made.output
    le_key = tmp_path / "le.pem"
    assert run("key", "generate", "-o", le_key).exit_code == 0
    home, machine = tmp_path / "home", tmp_path / "machine" / "machine.json"
    init = run("platform", "init", "--home", home, "--machine", machine, "--root", root,
               "--le-key", le_key, "--epc-mib", "4")  # fmt: skip
    assert init.exit_code == 0, init.output
    keys = sorted(str(p) for p in (tmp_path / "keys").glob("*.key.pem"))
    return Owner(tmp_path, root, keys, home, machine, le_key)


def at(owner: Owner) -> list[str | Path]:
    return ["--home", owner.home, "--machine", owner.machine]


def test_key_generate_and_public_report_the_mrsigner_of_what_they_wrote(tmp_path: Path) -> None:
    key, public = tmp_path / "a.pem", tmp_path / "a.pub.pem"
    made = ok("key", "generate", "-o", key)
    assert made == {"output": str(key), "mrsigner": made["mrsigner"]}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ok("key", "mrsigner", key)["mrsigner"] == made["mrsigner"]
    shown = ok("key", "public", key, "-o", public)
    assert shown == {"key": str(key), "output": str(public), "mrsigner": made["mrsigner"]}
    assert ok("key", "mrsigner", public)["mrsigner"] == made["mrsigner"]
    assert b"PRIVATE" not in public.read_bytes()

    before = key.read_bytes()
    error = refused("key", "generate", "-o", key)  # a key file is never overwritten
    assert error["kind"] == "usage" and str(key) in error["message"]
    assert key.read_bytes() == before
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key\n")
    error = refused("key", "public", garbage, "-o", tmp_path / "g.pub.pem")
    assert error["kind"] == "malformed_input" and error["source"] == str(garbage)
    assert not (tmp_path / "g.pub.pem").exists()


def test_policy_new_allow_deny_sign_digests_are_the_digest_install_reports(owner: Owner) -> None:
    policy, signed = owner.tmp / "policy.json", owner.tmp / "policy.signed.json"
    new = ok("policy", "new", "-o", policy, "--no-quoting")
    assert new["output"] == str(policy) and new["quoting_signer"] is None
    assert new["allow"] == [] and new["deny"] == [] and new["version"] == 1
    assert new["digest"] == hashlib.sha256(policy.read_bytes()).hexdigest()

    allowed = ok("policy", "allow", policy, "--id", "case1", "--sigstruct",
                 GEN / "case1_defaults.sig", "--isvsvn", "0..")  # fmt: skip
    shown = ok("policy", "show", policy)
    assert allowed["effect"] == "allow" and allowed["rule"] == shown["allow"][-1]
    assert allowed["rule"]["id"] == "case1" and allowed["rule"]["isvsvn"] == {
        "min": 0,
        "max": 0xFFFF,
    }
    assert (allowed["allow_rules"], allowed["deny_rules"]) == (1, 0)
    denied = ok("policy", "deny", policy, "--id", "revoked", "--mrenclave", "ab" * 32)
    assert (
        denied["rule"]
        == ok("policy", "show", policy)["deny"][-1]
        == {
            "id": "revoked",
            "mrenclave": "ab" * 32,
        }
    )
    assert (denied["allow_rules"], denied["deny_rules"]) == (1, 1)
    assert denied["digest"] == hashlib.sha256(policy.read_bytes()).hexdigest() != allowed["digest"]

    # a refused edit changes nothing
    before = policy.read_bytes()
    error = refused("policy", "allow", policy, "--id", "case1", "--mrsigner", "cd" * 32)
    assert error["kind"] == "usage" and "case1" in error["message"]
    assert policy.read_bytes() == before

    first = ok("policy", "sign", policy, "--key", owner.keys[0], "-o", signed)
    assert first["type"] == "launch-policy" and first["version"] == 1
    assert first["digest"] == denied["digest"] == payload_digest(signed)
    assert first["signed_with"] == first["signed_by"] and len(first["signed_by"]) == 1
    second = ok("policy", "sign", signed, "--key", owner.keys[1])  # in place
    assert second["output"] == str(signed) and second["digest"] == first["digest"]
    assert second["signed_by"] == first["signed_by"] + second["signed_with"]
    assert ok("policy", "show", signed)["signed_by"] == second["signed_by"]
    installed = ok("platform", "install-policy", signed, *at(owner))
    assert installed["installed"] and installed["digest"] == second["digest"]

    error = refused("policy", "sign", policy, "--key", owner.keys[0])  # a document needs -o
    assert error["kind"] == "usage" and "-o" in error["message"]


def test_policy_sign_of_an_envelope_honours_force(owner: Owner) -> None:
    """``policy sign ENVELOPE -o EXISTING --force`` overwrites, as --help says (it used to
    refuse with a message asking for the --force it had been given)."""
    policy, signed = owner.tmp / "policy.json", owner.tmp / "policy.signed.json"
    ok("policy", "new", "-o", policy, "--no-quoting")
    ok("policy", "sign", policy, "--key", owner.keys[0], "-o", signed)
    out = owner.tmp / "out.json"
    out.write_text("old\n")
    assert refused("policy", "sign", signed, "--key", owner.keys[1], "-o", out)["kind"] == "usage"
    assert out.read_text() == "old\n"
    result = ok("policy", "sign", signed, "--key", owner.keys[1], "-o", out, "--force")
    assert len(result["signed_by"]) == 2 and payload_digest(out) == result["digest"]


def test_owner_sign_and_mode_sign_say_the_same_of_one_document(owner: Owner) -> None:
    signer = ok("key", "mrsigner", owner.le_key)["mrsigner"]
    mode = owner.tmp / "mode.json"
    ok("owner", "mode", "new", "--mode", "owner", "--le-mrsigner", signer, "--version", "1",
       "--any-platform", "-o", mode)  # fmt: skip
    by_mode = ok("owner", "mode", "sign", mode, "--key", owner.keys[0], "-o", owner.tmp / "a.json")
    by_owner = ok("owner", "sign", mode, "--key", owner.keys[0], "-o", owner.tmp / "b.json")
    assert {k: v for k, v in by_mode.items() if k != "output"} == {
        k: v for k, v in by_owner.items() if k != "output"
    }
    shown = ok("owner", "mode", "show", owner.tmp / "a.json")
    for name in ("type", "version", "expires", "mode", "le_mrsigner", "platform_id", "signed_by"):
        assert by_mode[name] == shown[name], name
    assert by_mode["digest"] == payload_digest(owner.tmp / "a.json")

    rotated = owner.tmp / "root-v2.json"
    made = run("owner", "rotate", owner.root, "--keep-all", "--keys", "1", "--key-dir",
               owner.tmp / "k3", "-o", rotated)  # fmt: skip
    assert made.exit_code == 0, made.output
    signed = ok("owner", "sign", rotated, "--key", owner.keys[0], "--key", owner.keys[1])
    assert signed["type"] == "owner-root" and signed["version"] == 2
    assert signed["output"] == str(rotated) and len(signed["signed_by"]) == 3  # + the new key
    assert signed["signed_by"][1:] == signed["signed_with"]
    assert ok("owner", "install", rotated, "--home", owner.home)["installed"]

    # owner sign -o EXISTING names --force, and now has it
    exists = owner.tmp / "b.json"
    before = exists.read_bytes()
    assert refused("owner", "sign", mode, "--key", owner.keys[1], "-o", exists)["kind"] == "usage"
    assert exists.read_bytes() == before
    assert len(ok("owner", "sign", mode, "--key", owner.keys[1], "-o", exists, "--force")[
        "signed_by"]) == 1  # fmt: skip
    garbage = owner.tmp / "garbage.json"
    garbage.write_bytes(b"{}")
    assert refused("owner", "mode", "sign", garbage, "--key", owner.keys[0])["kind"] == (
        "malformed_input"
    )


def test_appraisal_sign_reports_the_envelope_it_wrote(tmp_path: Path, owner: Owner) -> None:
    document = tmp_path / "appraisal.json"
    document.write_text(json.dumps({
        "spec_version": "1", "type": "quote-appraisal", "version": 3,
        "expires": "2099-01-01T00:00:00Z",
        "identities": [{"id": "any", "mrsigner": "ab" * 32}],
        "tcb_statuses": ["UpToDate"], "denied_advisories": [],
    }))  # fmt: skip
    envelope = tmp_path / "appraisal.dsse.json"
    signed = ok("quote", "appraisal", "sign", document, "--key", owner.keys[0], "-o", envelope)
    assert signed["type"] == "quote-appraisal" and signed["version"] == 3
    assert signed["expires"] == "2099-01-01T00:00:00Z"
    assert signed["digest"] == hashlib.sha256(document.read_bytes()).hexdigest()
    assert signed["digest"] == payload_digest(envelope)
    more = ok("quote", "appraisal", "sign", envelope, "--key", owner.keys[1])
    assert more["output"] == str(envelope) and len(more["signed_by"]) == 2
    error = refused("quote", "appraisal", "sign", document, "--key", owner.keys[0])
    assert error["kind"] == "usage" and "-o" in error["message"]


def test_recovery_sign_result_is_what_recovery_apply_accepts(owner: Owner) -> None:
    launched = run("run", GEN / "case1_defaults.sgxs", "--sig", GEN / "case1_defaults.sig",
                   *at(owner))  # fmt: skip
    assert launched.exit_code == 0, launched.output  # an attempt and its outcome: counter 2
    with sqlite3.connect(owner.home / "state.sqlite3") as db:
        db.execute("DELETE FROM kv WHERE key LIKE 'platform/le-sealed/%'")
    facts = ok("machine", "show", "--machine", owner.machine)
    document = owner.tmp / "recovery.json"
    counter = facts["counter"]["value"]
    signed = ok("recovery", "sign", "--platform-id", facts["platform_id"], "--counter", counter,
                "--key", owner.keys[0], "--key", owner.keys[1], "-o", document)  # fmt: skip
    assert signed["type"] == "recovery" and signed["counter"] == counter
    assert signed["platform_id"] == facts["platform_id"]
    assert signed["digest"] == payload_digest(document) and len(signed["signed_by"]) == 2
    before = document.read_bytes()
    again = refused("recovery", "sign", "--platform-id", facts["platform_id"], "--counter",
                    counter, "--key", owner.keys[0], "-o", document)  # fmt: skip
    assert again["kind"] == "usage" and document.read_bytes() == before
    assert ok("recovery", "apply", document, *at(owner))["counter"] == counter + 1


def test_launch_enclave_image_sign_and_install_agree(owner: Owner) -> None:
    image, sig = owner.tmp / "le.sgxs", owner.tmp / "le.sig"
    made = ok("platform", "le-image", "-o", image, *at(owner))
    assert made["size"] == image.stat().st_size
    assert ok("measure", image)["mrenclave"] == made["mrenclave"]
    assert made["owner_root_digest"] == ok("machine", "show", "--machine", owner.machine)[
        "owner_root_digest"]  # fmt: skip
    signed = ok("platform", "le-sign", "--key", owner.le_key, "-o", sig, *at(owner))
    assert signed["mrenclave"] == made["mrenclave"] and signed["output"] == str(sig)
    assert signed["mrsigner"] == ok("key", "mrsigner", owner.le_key)["mrsigner"]
    # the fields le-image says to sign with are the fields le-sign signed
    inspected = ok("inspect", sig)
    for name, value in made["sigstruct_fields"].items():
        assert inspected[name] == value, name
    installed = ok("platform", "le-install", sig, *at(owner))
    assert installed == {"sigstruct": str(sig), "mrenclave": signed["mrenclave"],
                         "mrsigner": signed["mrsigner"]}  # fmt: skip
    status = ok("platform", "status", *at(owner))["launch_enclave"]
    assert status["mrsigner"] == signed["mrsigner"]

    assert refused("platform", "le-image", "-o", image, *at(owner))["kind"] == "usage"
    assert ok("platform", "le-image", "-o", image, "--force", *at(owner))["size"] == made["size"]
    garbage = owner.tmp / "garbage.sig"
    garbage.write_bytes(b"\0" * 100)
    error = refused("platform", "le-install", garbage, *at(owner))
    assert error["kind"] == "malformed_input" and error["source"] == str(garbage)


def test_le_sign_refused_for_an_existing_output_installs_nothing(owner: Owner) -> None:
    """The refusal comes before the install: the launch enclave stays the one installed (it
    used to install the new one, then refuse to write -o)."""
    other = owner.tmp / "other-le.pem"
    assert run("key", "generate", "-o", other).exit_code == 0
    sig = owner.tmp / "le.sig"
    sig.write_bytes(b"keep me")
    before = ok("platform", "status", *at(owner))["launch_enclave"]["mrsigner"]
    error = refused("platform", "le-sign", "--key", other, "-o", sig, *at(owner))
    assert error["kind"] == "usage" and str(sig) in error["message"]
    assert sig.read_bytes() == b"keep me"
    assert ok("platform", "status", *at(owner))["launch_enclave"]["mrsigner"] == before
    forced = ok("platform", "le-sign", "--key", other, "-o", sig, "--force", *at(owner))
    assert ok("platform", "status", *at(owner))["launch_enclave"]["mrsigner"] == forced["mrsigner"]
    assert forced["mrsigner"] != before and len(sig.read_bytes()) == 1808


def test_take_ownership_clear_ownership_and_migrate_report_the_machine(owner: Owner) -> None:
    facts = ok("machine", "show", "--machine", owner.machine)
    taken = ok("platform", "take-ownership", owner.root, *at(owner))
    assert taken == {"root": str(owner.root), "owner_root_digest": facts["owner_root_digest"]}
    other = owner.tmp / "other-root.json"
    run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir", owner.tmp / "k2",
        "-o", other)  # fmt: skip
    error = refused("platform", "take-ownership", other, *at(owner))
    assert "already has an owner" in error["message"]
    assert ok("machine", "show", "--machine", owner.machine) == facts

    # a legacy home (its seed inside), moved onto a new machine
    with sqlite3.connect(owner.home / "state.sqlite3") as db:
        db.execute("INSERT INTO kv VALUES ('platform/seed', ?)", (b"old-seed-0123456789abcdef",))
    new_machine = owner.tmp / "new" / "machine.json"
    moved = ok("machine", "migrate", "--home", owner.home, "--machine", new_machine)
    new_facts = ok("machine", "show", "--machine", new_machine)
    assert moved["machine"] == str(new_machine) and moved["home"] == str(owner.home)
    assert moved["platform_id"] == new_facts["platform_id"] != facts["platform_id"]
    assert moved["owner_root_digest"] == new_facts["owner_root_digest"] == taken[
        "owner_root_digest"]  # fmt: skip
    assert moved["archived"] > 0 and any("le-sign" in step for step in moved["next"])
    nowhere = owner.tmp / "m3" / "machine.json"
    error = refused("machine", "migrate", "--home", owner.home, "--machine", nowhere)
    assert "no platform seed" in error["message"] and not nowhere.exists()

    cleared = ok("machine", "clear-ownership", "--yes", "--machine", new_machine)
    after = ok("machine", "show", "--machine", new_machine)
    assert after["owner_epoch"] == new_facts["owner_epoch"] + 1
    assert cleared == {
        "machine": str(new_machine),
        "platform_id": new_facts["platform_id"],
        "owner_epoch": after["owner_epoch"],
        "counter": 0,
        "cleared_owner_root_digest": new_facts["owner_root_digest"],
    }
    assert after["owner_root_digest"] is None and after["counter"]["value"] == 0
    error = refused("machine", "clear-ownership", "--yes", "--machine", nowhere)
    assert error["kind"] == "usage" and not nowhere.exists()


def test_owner_init_rotate_and_mode_new_name_the_file_and_the_digest_installing_reports(
    tmp_path: Path,
) -> None:
    root, le_key = tmp_path / "root.json", tmp_path / "le.pem"
    made = ok("owner", "init", "--keys", "2", "--threshold", "2", "--key-dir", tmp_path / "keys",
              "-o", root)  # fmt: skip
    assert made["output"] == str(root) and made["digest"] == payload_digest(root)
    le_signer = ok("key", "generate", "-o", le_key)["mrsigner"]
    home, machine = tmp_path / "home", tmp_path / "machine.json"
    ok("platform", "init", "--home", home, "--machine", machine, "--root", root, "--le-key",
       le_key, "--epc-mib", "4")  # fmt: skip
    bound = ok("machine", "show", "--machine", machine)["owner_root_digest"]
    assert made["digest"] == bound

    keys = sorted(str(p) for p in (tmp_path / "keys").glob("*.key.pem"))
    mode = tmp_path / "mode.json"
    new = ok("owner", "mode", "new", "--mode", "owner", "--le-mrsigner", le_signer, "--version",
             "1", "--machine", machine, "-o", mode, "--key", keys[0], "--key", keys[1])  # fmt: skip
    assert new["output"] == str(mode) and new["digest"] == payload_digest(mode)
    assert ok("platform", "mode", mode, "--home", home, "--machine", machine)["mode"] == "owner"
    installed = ok("owner", "mode", "show", "--home", home)["mode"]
    assert installed["digest"] == new["digest"]

    rotated = tmp_path / "root-v2.json"
    next_root = ok("owner", "rotate", root, "--keep-all", "--keys", "1", "--key-dir",
                   tmp_path / "keys2", "-o", rotated)  # fmt: skip
    assert next_root["output"] == str(rotated) and next_root["version"] == 2
    signed = ok("owner", "sign", rotated, "--key", keys[0], "--key", keys[1])
    assert next_root["digest"] == signed["digest"] == payload_digest(rotated) != made["digest"]


def test_sign_and_two_step_signing_report_the_same_sigstruct(tmp_path: Path) -> None:
    image, key = GEN / "case1_defaults.sgxs", GEN / "case1_defaults.key.pem"
    fields = ("--isvprodid", "7", "--isvsvn", "3", "--date", "20260101")
    one_step = tmp_path / "one.sig"
    signed = ok("sign", image, "--key", key, *fields, "-o", one_step)
    assert signed["format"] == "sigstruct" and signed["output"] == str(one_step)
    assert signed["sha256"] == hashlib.sha256(one_step.read_bytes()).hexdigest()
    verified = ok("verify", one_step, "--image", image)
    assert signed["mrenclave"] == verified["mrenclave"]
    assert signed["mrsigner"] == verified["mrsigner"]
    shown = ok("inspect", one_step)
    for name in ("isvprodid", "isvsvn", "attributes"):
        assert signed[name] == shown[name], name
    assert (signed["isvprodid"], signed["isvsvn"]) == (7, 3)

    data = tmp_path / "one.data"
    made = ok("gendata", image, *fields, "-o", data)
    assert made["size"] == 256 == data.stat().st_size
    assert made["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert made["mrenclave"] == signed["mrenclave"]
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    raw = tmp_path / "one.sig.raw"
    raw.write_bytes(private.sign(data.read_bytes(), padding.PKCS1v15(), hashes.SHA256()))
    two_step = tmp_path / "two.sig"
    assembled = ok("catsig", data, "--key", key, "--signature", raw, "-o", two_step)
    assert assembled == signed | {"output": str(two_step)}  # the very same SIGSTRUCT bytes
    assert two_step.read_bytes() == one_step.read_bytes()

    wrong = tmp_path / "wrong.raw"
    wrong.write_bytes(bytes(384))
    error = refused("catsig", data, "--key", key, "--signature", wrong, "-o", tmp_path / "w.sig",
                    code=1)  # fmt: skip
    assert error["kind"] == "verification_failed" and error["check"] == "signature"
    assert error["message"].startswith(f"{wrong} (over {data}, with {key}): ")
    assert not (tmp_path / "w.sig").exists()


def test_sdk_enclave_sign_and_convert_report_what_they_wrote(tmp_path: Path) -> None:
    from tests.support.keys import KEY_FILES
    from tests.support.sdk import PF_R, PF_W, Seg, Spec, build

    segment = Seg(0x3000, b"\x42" * 900, 0x2000, PF_R | PF_W)
    unsigned = tmp_path / "enclave.so"
    unsigned.write_bytes(build(Spec(version=(2, 1), compat=((1, 4),),
                                    data_segments=[segment])).data)  # fmt: skip
    signed_so = tmp_path / "enclave.signed.so"
    key = shared_vectors() / KEY_FILES["app"]
    signed = ok("sign", "--key", key, unsigned, "-o", signed_so)
    assert signed["format"] == "sdk"
    assert signed["sha256"] == hashlib.sha256(signed_so.read_bytes()).hexdigest()
    assert ok("measure", signed_so)["mrenclave"] == signed["mrenclave"]
    sgxs = tmp_path / "enclave.sgxs"
    converted = ok("convert", signed_so, "-o", sgxs)
    assert converted["mrenclave"] == signed["mrenclave"] == ok("measure", sgxs)["mrenclave"]
    assert converted["size"] == sgxs.stat().st_size
    assert converted["mrenclave"] == hashlib.sha256(sgxs.read_bytes()).hexdigest()
    error = refused("convert", GEN / "case1_defaults.sgxs", "-o", tmp_path / "x.sgxs")
    assert "Intel SDK enclave" in error["message"] and not (tmp_path / "x.sgxs").exists()


def test_every_command_but_the_daemon_takes_json() -> None:
    """docs/json.md's contract covers the whole command line; `serve` runs until stopped and
    prints no result."""
    from tests.support.json_cases import json_commands

    load_all_commands()

    def leaves(group: click.Group, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found |= leaves(command, f"{prefix}{name} ")
            else:
                found.add(f"{prefix}{name}")
        return found

    assert leaves(main) - json_commands() == {"serve"}


def test_example_reports_the_image_it_wrote(tmp_path: Path) -> None:
    hello, loader = tmp_path / "hello.sgxs", tmp_path / "loader.sgxs"
    made = ok("example", "-o", hello)
    assert made["loader"] is False and made["size"] == hello.stat().st_size
    assert made["mrenclave"] == ok("measure", hello)["mrenclave"]
    other = ok("example", "--loader", "-o", loader)
    assert other["loader"] is True and other["mrenclave"] == ok("measure", loader)["mrenclave"]
    assert other["mrenclave"] != made["mrenclave"]
    before = hello.read_bytes()
    assert refused("example", "--loader", "-o", hello)["kind"] == "usage"
    assert hello.read_bytes() == before
