"""Who builds alumet-agent for whom (roles/alumet_agent/tasks/plan.yml), by a real ansible-playbook run on
local-connection hosts, each with its own `getconf` reporting a glibc release: a binary runs with the glibc
it was linked against and every later one, never an earlier one. Then which hosts a rerun leaves out
(roles/install_record/tasks/up_to_date.yml): a build host stays while a host it builds for runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# name -> (OS family, what `getconf GNU_LIBC_VERSION` prints; None: getconf fails, as without glibc)
HOSTS = {
    "deb13": ("Debian", "glibc 2.41"),
    "u2404": ("Debian", "glibc 2.39"),
    "u2404b": ("Debian", "glibc 2.39"),
    "odd": ("Debian", None),
    "rhel": ("RedHat", "glibc 2.34"),
}


def play_on_hosts(tmp_path: Path, playbook: list[dict]) -> dict:
    """Run playbook on HOSTS, local-connection hosts each with its own `getconf` on the PATH the play gives
    it (test_bin); ansible-playbook's results as its json callback reports them."""
    inventory: dict = {"all": {"hosts": {}}}
    for name, (family, libc) in HOSTS.items():
        bin_dir = tmp_path / "bin" / name
        bin_dir.mkdir(parents=True)
        getconf = bin_dir / "getconf"
        getconf.write_text(f"#!/bin/sh\necho '{libc}'\n" if libc else "#!/bin/sh\nexit 1\n")
        getconf.chmod(getconf.stat().st_mode | stat.S_IXUSR)
        inventory["all"]["hosts"][name] = {"ansible_connection": "local", "test_bin": str(bin_dir),
                                           "test_family": family, "ansible_python_interpreter": sys.executable}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_FORKS": "10",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    ansible = Path(sys.executable).with_name("ansible-playbook")
    run = subprocess.run([str(ansible), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads(run.stdout)


def planned(name: str, settings: dict, tasks: list[dict]) -> dict:
    """A play on HOSTS that runs alumet_agent's plan.yml with these settings, then these tasks."""
    return {
        "name": name, "hosts": "all", "gather_facts": False,
        "environment": {"PATH": "{{ test_bin }}:" + os.environ["PATH"]},
        "vars": {"alumet_agent_build_once": True, **settings},
        "pre_tasks": [{"name": "Pretend the OS family", "ansible.builtin.set_fact": {
            "alumet_agent_build_key": "alumet_build_{{ test_family | lower }}_x86_64"}}],
        "tasks": [{"name": "Plan", "ansible.builtin.import_role": {"name": "alumet_agent", "tasks_from": "plan"}},
                  *tasks],
    }


CASES = {
    # Debian 13 runs Ubuntu 24.04's build; getconf's failure and another family each build alone.
    "oldest": ({}, {"deb13": "u2404", "u2404": "u2404", "u2404b": "u2404", "odd": "odd", "rhel": "rhel"}),
    # Chosen, a build host builds for every host it can serve...
    "chosen": ({"alumet_agent_build_host": "u2404b"},
               {"deb13": "u2404b", "u2404": "u2404b", "u2404b": "u2404b", "odd": "odd", "rhel": "rhel"}),
    # ... and never for a host with an older glibc: those keep the oldest.
    "chosen_newest": ({"alumet_agent_build_host": "deb13"},
                      {"deb13": "deb13", "u2404": "u2404", "u2404b": "u2404", "odd": "odd", "rhel": "rhel"}),
    "build_on_each": ({"alumet_agent_build_once": False}, {name: name for name in HOSTS}),
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Each case's alumet_agent_builder per host after plan.yml: one play per case, one ansible-playbook run."""
    tmp_path = tmp_path_factory.mktemp("plan")
    out = tmp_path / "out"
    for case in CASES:
        (out / case).mkdir(parents=True)
    playbook = [planned(f"Plan {case}", settings, [{"name": "Write the builder", "ansible.builtin.copy": {
        "content": "{{ alumet_agent_builder }} {{ alumet_agent_builds_here }}",
        "dest": f"{out}/{case}/{{{{ inventory_hostname }}}}"}}]) for case, (settings, _) in CASES.items()]
    play_on_hosts(tmp_path, playbook)
    found: dict[str, dict[str, str]] = {}
    for case in CASES:
        for name in HOSTS:
            builder, here = (out / case / name).read_text().split()
            assert (here == "True") is (builder == name), (case, name, builder, here)
            found.setdefault(case, {})[name] = builder
    return found


@pytest.mark.parametrize("case", CASES)
def test_who_builds_for_whom(plans: dict[str, dict[str, str]], case: str) -> None:
    assert plans[case] == CASES[case][1]


SAY = "Up to date | Say that a build host up to date runs all the same"

# install's fast path after the plan (roles/install_record/tasks/up_to_date.yml): alumet-setup's survey found
# these hosts up to date -> (the hosts that stay in the play, what each build host that stays says).
RERUNS = {
    # u2404 builds for deb13 and u2404b: it stays while u2404b runs; deb13 (up to date) goes.
    "builder_stays": (["u2404", "deb13"],
                      {"u2404", "u2404b", "odd", "rhel"},
                      {"u2404": "up to date, but it builds alumet-agent for u2404b: it runs too"}),
    # Every host u2404 builds for is up to date: it goes too; odd and rhel each build for themselves only.
    "all_go": (["deb13", "u2404", "u2404b", "odd", "rhel"], set(), {}),
    "none": ([], set(HOSTS), {}),
}


@pytest.fixture(scope="module")
def reruns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[set[str], dict[str, str]]]:
    """Each rerun case: the hosts that reach the play's steps, and the build hosts' messages; one
    ansible-playbook run for all cases."""
    tmp_path = tmp_path_factory.mktemp("rerun")
    out = tmp_path / "out"
    for case in RERUNS:
        (out / case).mkdir(parents=True)
    playbook = [planned(f"Rerun {case}", {"alumet_setup_up_to_date": up_to_date}, [
        {"name": "Leave out", "ansible.builtin.import_role": {"name": "install_record", "tasks_from": "up_to_date"}},
        {"name": "Stayed", "ansible.builtin.copy": {"content": "",
                                                    "dest": f"{out}/{case}/{{{{ inventory_hostname }}}}"}},
    ]) for case, (up_to_date, _, _) in RERUNS.items()]
    run = play_on_hosts(tmp_path, playbook)
    said: dict[str, dict[str, str]] = {case: {} for case in RERUNS}
    for play, case in zip(run["plays"], RERUNS, strict=True):
        for task in play["tasks"]:
            if task["task"]["name"] == f"install_record : {SAY}":
                said[case].update({host: res["msg"] for host, res in task["hosts"].items() if "msg" in res})
    return {case: ({p.name for p in (out / case).iterdir()}, said[case]) for case in RERUNS}


@pytest.mark.parametrize("case", RERUNS)
def test_a_rerun_leaves_out_the_hosts_up_to_date_but_a_build_host_a_running_host_needs(
        reruns: dict[str, tuple[set[str], dict[str, str]]], case: str) -> None:
    assert reruns[case] == RERUNS[case][1:]
