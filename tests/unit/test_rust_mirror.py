"""One setting for a lab's Rust mirror: rustup_mirror=URL gives the dist server URL and the update root
URL/rustup (the standard rustup mirror layout), derived in the rustup role's defaults (one home, Ansible
users get it too), explicit settings winning. Evaluated by Ansible's own templating of the role's files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from alumet_setup.hostside import resources
from alumet_setup.playbook.settings import load_specs, parse_settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
import readme_commands  # noqa: E402  (tests/bed is not a package)

MIRROR = "https://rust-mirror.lab.example"


def _derived(settings: dict[str, str]) -> dict[str, str]:
    """rustup_dist_server and rustup_update_root as Ansible templates them from the role's defaults and vars,
    given `settings` (extra vars: --set, never trusted as templates)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    role = ROOT / "roles" / "rustup"
    variables: dict[str, object] = {}
    for path in (role / "defaults" / "main.yml", role / "vars" / "main.yml"):  # files Ansible trusts
        variables.update({k: trust_as_template(v) if isinstance(v, str) else v
                          for k, v in yaml.safe_load(path.read_text()).items()})
    templar = Templar(loader=DataLoader(), variables={**variables, **settings})
    return {"dist": templar.template(trust_as_template("{{ rustup_dist_server }}")),
            "root": templar.template(trust_as_template("{{ rustup_update_root }}"))}


@pytest.mark.parametrize(("settings", "dist", "root"), [
    ({"rustup_mirror": MIRROR}, MIRROR, f"{MIRROR}/rustup"),
    ({"rustup_mirror": f"{MIRROR}/"}, MIRROR, f"{MIRROR}/rustup"),
    # The old way, only the dist server: rustup-init comes from the same mirror, not the public server.
    ({"rustup_dist_server": MIRROR}, MIRROR, f"{MIRROR}/rustup"),
    ({"rustup_mirror": MIRROR, "rustup_update_root": "https://other.example/up"}, MIRROR, "https://other.example/up"),
    ({"rustup_mirror": MIRROR, "rustup_dist_server": "https://dist.example"}, "https://dist.example",
     "https://dist.example/rustup"),
])
def test_one_mirror_setting_derives_both_servers(settings: dict[str, str], dist: str, root: str) -> None:
    assert _derived(settings) == {"dist": dist, "root": root}


def test_no_mirror_keeps_the_official_servers() -> None:
    derived = _derived({})
    assert derived["dist"] == "" and derived["root"].startswith("https://") and derived["root"].endswith("/rustup")


def test_readme_airgapped_command_names_settings_the_roles_accept() -> None:
    found = readme_commands.commands("Air-gapped labs")
    assert len(found) == 1 and found[0][:2] == ["alumet-setup", "install"], found
    argv = found[0]
    settings = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    values = parse_settings(settings, load_specs(resources.bundled("roles")))
    assert set(values) == {"rustup_mirror", "alumet_agent_git_url"}
