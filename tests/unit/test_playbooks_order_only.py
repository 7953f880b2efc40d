"""playbooks/*.yml hold the order of the steps and nothing else (docs/architecture.md): every decision (which
hosts build, which hosts a rerun leaves out, what a step does) lives in a role, where it has one home, its
argument spec and its tests. The rule, precisely:
- a play has only the keys of PLAY_KEYS;
- each task of pre_tasks, tasks and post_tasks is a name, its tags and one action of TASK_ACTIONS (a role's
  task file, or gathering facts): no when, vars, block, register, loop, set_fact, meta or debug;
- each entry of roles is the role, its tags, and at most `vars` (a setting one role takes from another) and
  `when` (whether that step runs on a host: step selection);
- a template in a playbook names variables and uses no filter but `default` and `bool`, and names no other
  host's variables (CROSS_HOST): a decision over the play's hosts is a role's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alumet_setup.playbook.runner import _texts

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))

PLAY_KEYS = {"name", "hosts", "become", "gather_facts", "environment", "vars", "pre_tasks", "tasks", "post_tasks",
             "roles"}
TASK_ACTIONS = {"ansible.builtin.import_role", "ansible.builtin.setup"}
ROLE_KEYS = {"role", "tags", "vars", "when"}
FILTERS = {"default", "bool"}
CROSS_HOST = {"hostvars", "groups", "ansible_play_hosts", "ansible_play_hosts_all", "ansible_play_batch",
              "play_hosts"}


def _expressions(value: Any) -> Iterator[str]:
    """Every Jinja expression in value: what {{ }} holds, and a `when` (a bare expression)."""
    for text in _texts(value):  # every string in value, nested or not
        yield from re.findall(r"\{\{(.*?)\}\}", text, re.DOTALL)


def _template_problems(where: str, expression: str) -> list[str]:
    problems = [f"{where}: filter {f!r} in {expression.strip()!r}"
                for f in re.findall(r"\|\s*([A-Za-z_][\w.]*)", expression) if f not in FILTERS]
    problems += [f"{where}: reads other hosts ({name}) in {expression.strip()!r}"
                 for name in re.findall(r"[A-Za-z_]\w*", expression) if name in CROSS_HOST]
    return problems


def problems_of(playbook: Any) -> list[str]:
    """Where a playbook (as YAML loads it) holds more than the order of the steps; [] when it does not."""
    problems: list[str] = []
    for play in playbook:
        where = play.get("name", "a play")
        problems += [f"{where}: play key {key!r}" for key in sorted(set(play) - PLAY_KEYS)]
        for key in ("environment", "vars"):
            for expression in _expressions(play.get(key)):
                problems += _template_problems(f"{where}: {key}", expression)
        for section in ("pre_tasks", "tasks", "post_tasks"):
            for task in play.get(section) or ():
                name = f"{where}: {section}: {task.get('name', 'a task')}"
                actions = set(task) - {"name", "tags"}
                if len(actions) != 1 or not actions <= TASK_ACTIONS:
                    problems.append(f"{name}: {sorted(actions)}, not one of {sorted(TASK_ACTIONS)}")
                for expression in _expressions(task):
                    problems += _template_problems(name, expression)
        for entry in play.get("roles") or ():
            name = f"{where}: role {entry.get('role')}"
            problems += [f"{name}: key {key!r}" for key in sorted(set(entry) - ROLE_KEYS)]
            when = entry.get("when")
            conditions = [] if when is None else when if isinstance(when, list) else [when]
            for expression in [*(str(c) for c in conditions), *_expressions(entry.get("vars"))]:
                problems += _template_problems(name, expression)
    return problems


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_a_playbook_is_the_order_of_the_steps(path: Path) -> None:
    assert problems_of(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


def test_the_rule_sees_a_decision_in_a_playbook() -> None:
    """The shapes a decision takes in a playbook are each caught, so the rule above can fail."""
    playbook = yaml.safe_load("""
- name: Play
  hosts: all
  serial: 1
  pre_tasks:
    - name: Decide
      ansible.builtin.set_fact:
        chosen: "{{ groups['all'] | first }}"
    - name: Block
      block:
        - name: Leave
          ansible.builtin.meta: end_host
      when: chosen == inventory_hostname
    - name: Import with a condition
      ansible.builtin.import_role:
        name: some_role
      when: ready | bool
  roles:
    - role: some_role
      register: out
      when: hostvars[inventory_hostname].x | bool
      vars:
        some_role_list: "{{ ansible_play_hosts | map('upper') | list }}"
""")
    found = problems_of(playbook)
    assert found == [
        "Play: play key 'serial'",
        "Play: pre_tasks: Decide: ['ansible.builtin.set_fact'], not one of "
        "['ansible.builtin.import_role', 'ansible.builtin.setup']",
        "Play: pre_tasks: Decide: filter 'first' in \"groups['all'] | first\"",
        "Play: pre_tasks: Decide: reads other hosts (groups) in \"groups['all'] | first\"",
        "Play: pre_tasks: Block: ['block', 'when'], not one of "
        "['ansible.builtin.import_role', 'ansible.builtin.setup']",
        "Play: pre_tasks: Import with a condition: ['ansible.builtin.import_role', 'when'], not one of "
        "['ansible.builtin.import_role', 'ansible.builtin.setup']",
        "Play: role some_role: key 'register'",
        "Play: role some_role: reads other hosts (hostvars) in 'hostvars[inventory_hostname].x | bool'",
        "Play: role some_role: filter 'map' in \"ansible_play_hosts | map('upper') | list\"",
        "Play: role some_role: filter 'list' in \"ansible_play_hosts | map('upper') | list\"",
        "Play: role some_role: reads other hosts (ansible_play_hosts) in \"ansible_play_hosts | map('upper') | list\"",
    ], found
