"""The alumet_config role's filter plugins: the configuration `config render` would write, or why not.

roles/alumet_config/filter_plugins (and the collection's plugins/filter) link here; Ansible runs it on the
controller. It renders through profiles.py (beside it), so the role and `alumet-setup config render` share
one renderer and one validation, and the role never writes a file the agent would refuse.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any


def _profiles() -> types.ModuleType:
    """alumet_setup.hostside.profiles, from whichever form this file was loaded in:
    - as alumet_setup.hostside.config_filter (tests, the CLI): the package's own module;
    - through a link (the checkout's roles/ and plugins/, the installed collection, whose links
      ansible-galaxy keeps): the modules beside the link's target, imported as a package of their own
      (profiles.py imports its siblings relatively);
    - copied into the wheel (alumet_setup/_bundled/roles: a wheel has no links): the installed package,
      which the Python that runs ansible-playbook (the tool's own) imports by name.
    """
    if __name__.startswith("alumet_setup."):
        return importlib.import_module("alumet_setup.hostside.profiles")
    here = Path(__file__).resolve().parent
    if (here / "profiles.py").is_file():
        name = "_alumet_setup_beside_" + str(abs(hash(str(here))))
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(here)]
            sys.modules[name] = package
        return importlib.import_module(f"{name}.profiles")
    return importlib.import_module("alumet_setup.hostside.profiles")


def alumet_config_render(profile: str, template_dir: str, role_vars: dict[str, Any]) -> dict[str, str]:
    """{"text": the configuration, "error": ""}, or {"text": "", "error": one line}: the role fails on the
    error before it writes anything."""
    profiles = _profiles()
    try:
        return {"text": profiles.render_role(str(profile), Path(str(template_dir)), dict(role_vars)), "error": ""}
    except profiles.ProfileError as error:
        return {"text": "", "error": str(error)}


def alumet_config_variables(profile: str) -> list[str]:
    """The role variables the profile reads (none for an unknown profile: alumet_config_render says why)."""
    profiles = _profiles()
    try:
        return profiles.role_variables(str(profile))
    except profiles.ProfileError:
        return []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"alumet_config_render": alumet_config_render, "alumet_config_variables": alumet_config_variables}
