"""SSH names from ~/.ssh/config (issue 15): the user ssh really logs in as decides whether the play must
become root (a root login needs no sudo, which a minimal host lacks). Real `ssh -G` on a config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from alumet_setup.playbook import inventory
from alumet_setup.playbook.inventory import build_inventory, resolve_targets

CONFIG = """\
Host rootbox
    HostName 192.0.2.7
    User root
Host alicebox
    HostName 192.0.2.8
    User alice
"""


@pytest.fixture
def ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    path.chmod(0o600)
    monkeypatch.setattr(inventory, "SSH_CONFIG", str(path), raising=False)
    return path


@pytest.mark.processes
def test_a_name_whose_user_is_root_is_not_made_to_sudo(ssh_config: Path) -> None:
    hosts = build_inventory(resolve_targets(["rootbox", "alicebox"]), is_root=False)["all"]["hosts"]
    assert hosts["rootbox"] == {"ansible_host": "rootbox", "ansible_connection": "ssh", "ansible_become": False}
    assert "ansible_become" not in hosts["alicebox"]  # the play's become: true (sudo) stays


def test_an_explicit_user_wins_over_the_config(ssh_config: Path) -> None:
    hosts = build_inventory(resolve_targets(["alice@rootbox"]), is_root=False)["all"]["hosts"]
    assert hosts["rootbox"]["ansible_user"] == "alice" and "ansible_become" not in hosts["rootbox"]


@pytest.mark.processes
def test_ssh_login_user_reads_ssh_G(ssh_config: Path) -> None:
    assert inventory.ssh_login_user("rootbox") == "root"
    assert inventory.ssh_login_user("alicebox", 2222) == "alice"
