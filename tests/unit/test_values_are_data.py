"""Every value a user types reaches Ansible as data: a Jinja expression in it is never rendered.

The playbooks run for real (ansible-playbook on this machine, local connection, nothing changed):
each value carries `lookup('pipe', 'touch FILE')`, and FILE must not exist afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alumet_setup.cli import main
from alumet_setup.hostside import resources
from alumet_setup.playbook import runner
from alumet_setup.playbook.inventory import Target, build_inventory
from alumet_setup.playbook.settings import load_specs, parse_settings

PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Use every value
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: "{{ [text, a_path, items, mapping, nested] }}"
    - name: Use the mapping's keys and the inventory's values
      ansible.builtin.debug:
        msg: "{{ mapping | dict2items }} {{ ansible_host }} {{ ansible_user }} {{ ansible_python_interpreter }}"
"""


def payload(marker: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(marker) + "') }}"


def test_extravars_and_generated_inventory_are_never_templated(tmp_path: Path) -> None:
    markers = {kind: tmp_path / f"ran-{kind}" for kind in ("str", "path", "list", "key", "value", "nested", "user")}
    specs = load_specs(resources.bundled("roles"))
    # The values go through the same conversion as --set: str, path, list and dict settings.
    extravars = parse_settings([
        f"alumet_config_output_path={payload(markers['str'])}",
        f"perf_paranoid_sysctl_file=/etc/sysctl.d/{payload(markers['path'])}.conf",  # paths are absolute
        f"prereqs_packages_extra=[\"{payload(markers['list'])}\", plain]",
        f"alumet_agent_environment={{\"RUSTFLAGS\": \"{payload(markers['value'])}\"}}",
    ], specs)
    variables = {
        "text": extravars["alumet_config_output_path"], "a_path": extravars["perf_paranoid_sysctl_file"],
        "items": extravars["prereqs_packages_extra"],
        # --set refuses such a key (not an environment variable name): the file written must hold it anyway.
        "mapping": {**extravars["alumet_agent_environment"], payload(markers["key"]): "v"},
        "nested": {"a": [{"b": payload(markers["nested"])}]},
    }
    inventory = build_inventory([Target(name="localhost", spec="localhost")], is_root=True)
    inventory["all"]["hosts"]["localhost"]["ansible_user"] = payload(markers["user"])
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    lines: list[str] = []
    result = runner.run_playbook(
        runner.PlaybookRun(playbook, generated_inventory=inventory, hosts=["localhost"], extravars=variables),
        runs_dir=tmp_path / "runs", echo=lines.append)
    assert result.ok, lines
    assert [p.name for p in markers.values() if p.exists()] == []
    # The values arrived unchanged (and our own template, the interpreter, was rendered).
    stdout = next((tmp_path / "runs").glob("*/stdout")).read_text()
    assert payload(markers["str"]) in stdout and payload(markers["value"]) in stdout
    assert "ansible_playbook_python" not in stdout


@pytest.mark.parametrize(("setting", "expected"), [
    ("perf_paranoid_value", "expected an integer"),  # int
    ("powercap_world_readable", "expected true or false"),  # bool
    ("alumet_config_profile", "is not one of"),  # choices
])
def test_typed_settings_refuse_a_template(capsys: pytest.CaptureFixture[str], tmp_path: Path, setting: str,
                                          expected: str) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(SystemExit) as caught:
        main(["install", "--check", "--host", "nowhere.invalid", "--set", f"{setting}={payload(marker)}"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and expected in err and err.count("\n") == 1
    assert not marker.exists()
