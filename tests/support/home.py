"""An owner-mode platform kept on disk as the CLI keeps it (SQLite home + machine file), and an
author's enclave written to files, for tests that run ``sgxlaunch`` in other processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sgxlaunch.formats.sgxs import write_sgxs
from sgxlaunch.launch.enclave import sign_launch_enclave
from sgxlaunch.launch.platform import Platform, PlatformConfig, take_ownership
from sgxlaunch.store import FileMachine, open_store
from tests.support.clock import NOW, Clock
from tests.support.keys import signer
from tests.support.platform import Owner, allow_rule, author_enclave


@dataclass
class DiskHome:
    """Paths of an owner-mode platform on disk and the files of one allowed enclave."""

    home: Path
    machine: Path
    image: Path
    sig: Path
    owner: Owner

    def open(self) -> Platform:
        store = open_store(self.home, create=False)
        return Platform.open(store, FileMachine(self.machine), clock=Clock())

    def policy(self, version: int) -> bytes:
        """A policy allowing the enclave (signed by the owner)."""
        _image, sig = author_enclave()
        return self.owner.policy(version=version, allow=[allow_rule(sig)])


def make_disk_home(base: Path, *, policy_version: int = 1) -> DiskHome:
    """Owner root, launch enclave, a policy allowing the author's enclave, and owner mode."""
    owner = Owner()
    home, machine = base / "home", base / "machine.json"
    home.mkdir(mode=0o700)
    file_machine = FileMachine.create(
        machine, PlatformConfig(epc_size=4 << 20).machine_state(owner.seed)
    )
    image, sig = author_enclave()
    with open_store(home) as store:
        take_ownership(store, file_machine, owner.root, NOW)
        le = sign_launch_enclave(owner.root, signer("owner-le"))
        platform = Platform.open(store, file_machine, clock=Clock())
        platform.set_launch_enclave(le)
        platform = Platform.open(store, file_machine, clock=Clock())
        platform.install_policy(owner.policy(version=policy_version, allow=[allow_rule(sig)]))
        platform.set_mode(owner.mode("owner", version=1))
    image_path, sig_path = base / "enclave.sgxs", base / "enclave.sig"
    image_path.write_bytes(write_sgxs(image))
    sig_path.write_bytes(sig.to_bytes())
    return DiskHome(home, machine, image_path, sig_path, owner)
