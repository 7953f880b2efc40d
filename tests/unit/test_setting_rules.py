"""One copy of each setting's range and format (alumet_setup/hostside/rules.py): `install --set`, every role's
preflight and doctor's reading of the install record check the same table, so a value the CLI accepts
is accepted on the host and one it refuses is refused there too (issue 26). The roles' preflights run
for real: ansible-playbook, local connection, check mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from alumet_setup.doctor import choices
from alumet_setup.hostside import resources, rules
from alumet_setup.playbook.settings import SettingError, load_specs, parse_settings

ROOT = Path(__file__).resolve().parents[2]
SPECS = load_specs(resources.bundled("roles"))
RULED = sorted({*rules.RANGES, *rules.FORMATS})
SETTINGS_TASK = "Preflight | Assert the settings fit their rules"


def _shared_check(role: str) -> dict[str, Any]:
    """The alumet_common_settings its preflight hands to alumet_common's tasks/settings.yml, or {}."""
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / "preflight.yml").read_text(encoding="utf-8"))
    for task in tasks:
        imported = task.get("ansible.builtin.import_role") or {}
        if imported == {"name": "alumet_common", "tasks_from": "settings"}:
            return task["vars"]["alumet_common_settings"]
    return {}


@pytest.mark.parametrize("name", RULED)
def test_every_ruled_setting_is_checked_by_its_roles_preflight_through_the_shared_table(name: str) -> None:
    role = SPECS[name].role
    assert _shared_check(role).get(name) == "{{ " + name + " }}", f"{role}'s preflight does not check {name}"


# A rule written again by hand: a literal pattern on a name/URL setting, a numeric bound on a ranged one.
_COPY = re.compile(r"\b(?P<name>\w+)\s*(?:\|\s*(?:string|int)\s*)?(?:is\s+(?:regex|match|search)\(\s*['\"]"
                   r"|[<>]=?\s*-?[0-9]|\|\s*length\s*>)")


def test_no_role_task_file_keeps_its_own_copy_of_a_rule() -> None:
    policies = {"rustup_toolchain"}  # its channel-or-version test is a policy beyond the format (rustup role)
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}"
             for path in sorted((ROOT / "roles").glob("*/tasks/*.yml"))
             for m in _COPY.finditer(path.read_text(encoding="utf-8"))
             if m["name"] in RULED and m["name"] not in policies]
    assert not found


def test_no_role_file_restates_the_paranoid_range() -> None:
    """Not even in words: `alumet-setup settings` and the preflight's message give it from rules.py."""
    found = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "roles").glob("*/*/*.yml"))
             if re.search(r"-1\s*(?:\.\.|to)\s*4|-1, 0, 1, 2, 3", p.read_text(encoding="utf-8"))]
    assert not found


def test_no_python_module_keeps_its_own_copy_of_a_rule() -> None:
    # (inventory.py's login user of --host is a name on the controller's side, not a setting: not a copy.)
    copies = [r"[a-z_][a-z0-9_", "-1 <= ", "(-1, 4)", "user@host:path", "_SCP_LIKE"]
    found = [f"{path.name}: {text}" for path in sorted((ROOT / "alumet_setup").glob("**/*.py"))
             if path.name != "rules.py" for text in copies if text in path.read_text(encoding="utf-8")]
    assert not found


@pytest.mark.parametrize("name", [n for n in choices.CHOICES if n in RULED])
def test_doctor_judges_the_record_by_the_same_rules(name: str) -> None:
    probes = [-2, -1, 4, 5, True, "3", "alumet", "Alumet", "a.b", "_x", "a" * 32, "a" * 33, "", None]
    assert [choices.CHOICES[name][0](v) for v in probes] == [rules.fits(name, v) for v in probes]


# (setting, --set value, whether the rules accept it). Each disagreed before: the CLI took the scp-like and
# bare-path URLs, capitals and dots in names that the roles refused; the roles took file:/// the CLI refused.
CASES = [
    ("alumet_agent_git_url", "file:///srv/alumet.git", True),
    ("alumet_agent_git_url", "ssh://git@example.org/alumet.git", True),
    ("alumet_agent_git_url", "git@example.org:alumet.git", False),
    ("alumet_agent_git_url", "/srv/alumet.git", False),
    ("alumet_group_name", "lab_1-x", True),
    ("alumet_group_name", "Lab", False),
    ("alumet_group_name", "lab.x", False),
    ("alumet_group_members", "ann,-rf", False),
    ("alumet_service_group", "a" * 33, False),
    ("perf_paranoid_value", "-1", True),
    ("perf_paranoid_value", "5", False),
    ("alumet_agent_poll_interval", "0", False),
    ("prereqs_apt_lock_timeout", "86400", True),
]


def _cli_accepts(setting: str, raw: str) -> tuple[bool, Any]:
    try:
        return True, parse_settings([f"{setting}={raw}"], SPECS)[setting]
    except SettingError:
        return False, None


@pytest.mark.parametrize(("setting", "raw", "accepted"), CASES)
def test_the_cli_judges_each_case_as_the_table(setting: str, raw: str, accepted: bool) -> None:
    assert _cli_accepts(setting, raw)[0] is accepted


@pytest.fixture(scope="module")
def preflight_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Case index -> the task of its role's preflight that failed ('' when none did): one play per case, the
    value as the CLI hands it over (typed as parse_settings types it; a refused one as the text typed)."""
    tmp_path = tmp_path_factory.mktemp("preflight")
    plays, values = [], {}
    for index, (setting, raw, _) in enumerate(CASES):
        accepted, value = _cli_accepts(setting, raw)
        values[f"case_{index}"] = value if accepted else (raw.split(",") if SPECS[setting].type == "list" else raw)
        out = tmp_path / f"case_{index}"
        plays.append({
            "name": f"case {index}", "hosts": "localhost", "gather_facts": True, "gather_subset": ["min"],
            "vars": {setting: "{{ case_" + str(index) + " }}"},
            "tasks": [{"block": [
                {"name": "Preflight", "ansible.builtin.import_role": {"name": SPECS[setting].role,
                                                                       "tasks_from": "preflight"}},
                {"name": "No failure", "ansible.builtin.copy": {"content": "", "dest": str(out)},
                 "check_mode": False}],
                "rescue": [{"name": "The failed task", "ansible.builtin.copy": {
                    "content": "{{ ansible_failed_task.name }}", "dest": str(out)}, "check_mode": False}]}],
        })
    (tmp_path / "play.yml").write_text(yaml.safe_dump(plays))
    (tmp_path / "values.json").write_text(json.dumps(values))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0", "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "--check", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'values.json'}",
                          str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return {index: (tmp_path / f"case_{index}").read_text() for index in range(len(CASES))}


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[f"{s}={r[:20]}" for s, r, _ in CASES])
def test_the_roles_preflight_accepts_what_the_cli_accepts_and_refuses_what_it_refuses(
        preflight_verdicts: dict[int, str], index: int, case: tuple[str, str, bool]) -> None:
    setting, raw, accepted = case
    failed = preflight_verdicts[index]
    assert (failed != SETTINGS_TASK) is _cli_accepts(setting, raw)[0] is accepted, (setting, raw, failed)


def test_a_number_from_an_ini_inventory_is_judged_as_the_text_the_spec_makes_of_it() -> None:
    """`rustup_toolchain=1.95` in an INI inventory (the test bed's) reaches the preflight as the float 1.95;
    the argument spec's `type: str` reads it as "1.95", so the shared check must too (it refused it)."""
    from alumet_setup.hostside.rules import alumet_setting_errors
    assert alumet_setting_errors({"rustup_toolchain": 1.95, "alumet_agent_version": 1}) == []
    assert alumet_setting_errors({"rustup_toolchain": True}) == ["rustup_toolchain: True is not a toolchain name such "
                                                                 "as 1.89 or stable"]
