"""The alumet_config role for real: ansible-playbook on this machine (local connection), its files under
tmp_path. It renders through `config render`'s code (alumet_setup/hostside/profiles.py), so it refuses what that
refuses before writing anything, writes any valid Unicode as valid TOML, and never writes over a link."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from alumet_setup.hostside import alumet_schema

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned files")


def play(tmp_path: Path, settings: dict[str, str], tasks_from: str = "main", role: str = "alumet_config",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The role with these settings, typed as the CLI's extra vars are (every string !unsafe); env is added
    to ansible-playbook's environment."""
    playbook = tmp_path / f"{tasks_from}.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": True, "tasks": [
        {"ansible.builtin.import_role": {"name": role, "tasks_from": tasks_from}}]}]))
    extravars = tmp_path / "vars.yml"
    # The record of what the role created goes under tmp_path too, not to this machine's /var/lib.
    quoted = {key: yaml.safe_dump(value, default_style='"').strip()
              for key, value in {"alumet_config_template_dir": str(ROOT / "templates"),
                                 "alumet_common_created_file": str(tmp_path / "state" / "created.json"),
                                 "alumet_common_created_legacy_user_file": str(tmp_path / "state" / "service-user"),
                                 **settings}.items()}
    extravars.write_text("".join(f"{key}: !unsafe {text}\n" for key, text in quoted.items()))
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                           f"ansible_python_interpreter={sys.executable}", "-e", f"@{extravars}", str(playbook)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
                               **(env or {})})


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("alumet_config_poll_interval", "99999999999999999999999999999s",
     "alumet_config: alumet_config_poll_interval: expected a duration such as \"1s\" or \"500ms\", got "
     "'99999999999999999999999999999s' (humantime 2.3.0: number is too large)"),
    ("alumet_config_csv_delimiter", "ab",
     "alumet_config: alumet_config_csv_delimiter: expected a string of exactly one character, got 'ab'"),
    ("alumet_config_flush_interval", "1.0000000001s", "alumet_config: alumet_config_flush_interval: expected"),
])
def test_the_role_refuses_what_config_render_refuses_and_writes_nothing(tmp_path: Path, setting: str, value: str,
                                                                        message: str) -> None:
    config = tmp_path / "etc-alumet" / "alumet-config.toml"
    run = play(tmp_path, {"alumet_config_file": str(config), setting: value})
    assert run.returncode != 0
    assert message in run.stdout, run.stdout[-3000:]
    assert not config.parent.exists()  # not even the directory


def test_the_role_writes_an_emoji_delimiter_as_valid_toml_and_values_as_data(tmp_path: Path) -> None:
    config = tmp_path / "etc-alumet" / "alumet-config.toml"
    output = "{{ 6 * 7 }} \"x\".csv"
    run = play(tmp_path, {"alumet_config_file": str(config), "alumet_config_csv_delimiter": "\U0001f600",
                          "alumet_config_output_path": output})
    assert run.returncode == 0, run.stdout[-3000:]
    text = config.read_text(encoding="utf-8")
    assert alumet_schema.validate_text(text, env={}) == []
    csv = tomllib.loads(text)["plugins"]["csv"]
    assert csv["csv_delimiter"] == "\U0001f600" and csv["output_path"] == output
    assert (config.stat().st_mode & 0o777, config.stat().st_uid) == (0o644, 0)
    undo = play(tmp_path, {"alumet_config_file": str(config)}, tasks_from="uninstall")
    assert undo.returncode == 0, undo.stdout[-3000:]
    assert not config.parent.exists()


@pytest.mark.parametrize("kind", ["link to a file", "link to /dev/null", "fifo"])
def test_a_link_or_special_file_at_the_config_path_is_never_written_over_nor_removed(tmp_path: Path,
                                                                                     kind: str) -> None:
    config = tmp_path / "etc-alumet" / "alumet-config.toml"
    config.parent.mkdir()
    real = tmp_path / "shared.toml"
    real.write_text("# the host's own configuration\n")
    if kind == "fifo":
        os.mkfifo(config)
    else:
        config.symlink_to("/dev/null" if "null" in kind else real)
    before = (os.readlink(config) if config.is_symlink() else "fifo", real.read_text())
    run = play(tmp_path, {"alumet_config_file": str(config)})
    assert run.returncode != 0
    assert f"alumet_config: {config} is " in run.stdout and "refusing to write over it" in run.stdout, \
        run.stdout[-3000:]
    assert (os.readlink(config) if config.is_symlink() else "fifo", real.read_text()) == before
    undo = play(tmp_path, {"alumet_config_file": str(config)}, tasks_from="uninstall")
    assert undo.returncode == 0, undo.stdout[-3000:]
    # Install created nothing there, so the record does not name the path: uninstall does not even look at it.
    assert "Remove " + str(config) in undo.stdout and f"changed: [localhost] => (item={config})" not in undo.stdout
    assert (os.readlink(config) if config.is_symlink() else "fifo", real.read_text()) == before
    assert os.path.lexists(config)


def test_a_directory_the_host_has_keeps_its_mode_and_owner_and_stays(tmp_path: Path) -> None:
    """A shared directory (1777, another owner, as /tmp or a user's home) as the configuration's: install
    writes the file in it without taking its sticky bit or handing it to root, uninstall removes the file only."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 65534, 65534)
    os.chmod(shared, 0o1777)
    config = shared / "x.toml"
    run = play(tmp_path, {"alumet_config_file": str(config)})
    assert run.returncode == 0, run.stdout[-3000:]
    assert config.is_file()
    assert (shared.stat().st_mode & 0o7777, shared.stat().st_uid, shared.stat().st_gid) == (0o1777, 65534, 65534)
    undo = play(tmp_path, {"alumet_config_file": str(config)}, tasks_from="uninstall")
    assert undo.returncode == 0, undo.stdout[-3000:]
    assert not config.exists() and shared.is_dir()
    assert (shared.stat().st_mode & 0o7777, shared.stat().st_uid, shared.stat().st_gid) == (0o1777, 65534, 65534)
