"""Which Ansible configuration the tool's own Ansible reads: its own file, and nothing of the user's.

"The tool's own Ansible" is every Ansible that runs in this process (inventory.py parses `-i` and
templates its connection variables) or that testinfra starts for doctor's ansible:// hosts (its
`ansible-inventory` and `ansible` children inherit this process's environment).

Ansible takes its configuration from ANSIBLE_CONFIG, else ./ansible.cfg, ~/.ansible.cfg or
/etc/ansible/ansible.cfg, and from ANSIBLE_* variables, once, when ansible.constants is first imported.
Many settings name code to load (inventory, vars, filter and lookup plugin directories, enabled plugins,
the module library, collections, Jinja2 extensions, a vault password script): an ansible.cfg in the
current directory, a checkout anyone could have written, ran its plugins inside `doctor -i`. So while
`isolated()` holds, ANSIBLE_CONFIG names ansible.cfg beside this file and every other ANSIBLE_* variable
is set aside; cli.main holds it for the whole run, before anything can import Ansible.

The play's ansible-playbook is the exception, on purpose (`users_environment()`, runner.py): it runs in
the run's private directory (never the current directory's ansible.cfg) and gets the user's own
ANSIBLE_* variables, ANSIBLE_CONFIG, ~/.ansible.cfg and /etc/ansible/ansible.cfg, as any ansible-playbook
the user starts would (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

OWN_CONFIG = Path(__file__).resolve().with_name("ansible.cfg")
_PREFIX = "ANSIBLE_"
# The user's ANSIBLE_* variables while isolated() holds (None: not isolated).
_users: dict[str, str] | None = None


def _take_ansible_variables() -> dict[str, str]:
    taken = {name: value for name, value in os.environ.items() if name.startswith(_PREFIX)}
    for name in taken:
        del os.environ[name]
    return taken


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """This process's environment as the tool's own Ansible must see it: ANSIBLE_CONFIG = OWN_CONFIG,
    no other ANSIBLE_* variable. Re-entrant; the user's variables come back when the outermost exits."""
    global _users
    if _users is not None:
        yield
        return
    if not OWN_CONFIG.is_file():  # Ansible would fall back to ./ansible.cfg: never run without it
        from ..hostside.resources import ResourceMissing

        raise ResourceMissing(f"alumet-setup is installed without its {OWN_CONFIG.name} (reinstall it)")
    users = _take_ansible_variables()
    os.environ["ANSIBLE_CONFIG"] = str(OWN_CONFIG)
    _users = users
    try:
        yield
    finally:
        _users = None
        _take_ansible_variables()
        os.environ.update(users)


@contextlib.contextmanager
def users_environment() -> Iterator[None]:
    """The user's own ANSIBLE_* variables back in the environment for a while (for the play's
    ansible-playbook: runner.py builds its environment in here); isolated again afterwards."""
    global _users
    users = _users
    if users is None:
        yield
        return
    _take_ansible_variables()
    os.environ.update(users)
    _users = None
    try:
        yield
    finally:
        _take_ansible_variables()
        os.environ["ANSIBLE_CONFIG"] = str(OWN_CONFIG)
        _users = users
