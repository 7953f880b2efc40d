"""Every Python file a role or the collection loads, loaded as Ansible loads it, from each form the project
ships in: the checkout (roles/, what `pip install -e` runs), the wheel (`pip install .` into a venv outside
the checkout: its alumet_setup/_bundled/roles, where links became copies) and the collection (built and
installed by ansible-galaxy, run by an Ansible that cannot import alumet_setup). Each form uses its own
ansible. Read-only on this machine: modules on a temporary fstab or in check mode, filters in `debug`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import collection  # tests/bed, put on sys.path by tests/conftest.py
import installed_tool
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The directories Ansible loads Python from, in the checkout: role modules and filters, collection plugins.
PLUGIN_GLOBS = ("roles/*/library/*.py", "roles/*/filter_plugins/*.py", "plugins/modules/*.py", "plugins/filter/*.py")


@dataclass(frozen=True)
class Plugin:
    file: str       # the plugin file's name (the same in every directory that holds it)
    module: str     # the module's name, or the filter's (of several in one file: the one called here)
    is_filter: bool
    args: Callable[[Path], str]  # ad-hoc arguments; modules get a scratch directory
    check: Callable[[dict[str, object]], bool]  # the host's result, as ad-hoc prints it


def _fstab(scratch: Path) -> str:
    (scratch / "fstab").write_text("proc /proc proc defaults 0 0\n")
    return f"policy=keep fstab={scratch / 'fstab'} backup={scratch / 'fstab.bak'}"


def _filter(expression: str) -> Callable[[Path], str]:
    return lambda _scratch: json.dumps({"msg": "{{ " + expression + " }}"})


PLUGINS = {
    "alumet_proc_fstab": Plugin(
        "alumet_proc_fstab.py", "alumet_proc_fstab", False, _fstab,
        lambda r: r.get("fstab_line") == "proc /proc proc defaults 0 0"),
    "alumet_sysctl_precedence": Plugin(
        "alumet_sysctl_precedence.py", "alumet_sysctl_precedence", False,
        lambda _s: "key=kernel.perf_event_paranoid file=/etc/sysctl.d/local.conf",
        lambda r: isinstance(r.get("overriding_files"), list)),
    "alumet_created": Plugin(
        "alumet_created.py", "alumet_created", False,
        lambda s: json.dumps({"phase": "before", "file": str(s / "created.json"), "track": {"path": [str(s / "no")]}}),
        lambda r: [Path(p).name for p in r.get("absent", {}).get("path", [])] == ["no"]),
    # Its proc_fstab is loaded in turn: beside the link's target, or from the installed package.
    "alumet_ptrace_reasons": Plugin(
        "alumet_ptrace_need.py", "alumet_ptrace_reasons", True,
        _filter("none | FILTER('rw,hidepid=invisible', 1000)"),
        lambda r: r.get("msg") == ["/proc is mounted hidepid=invisible without gid=1000"]),
    # profiles.py and alumet_schema.py are loaded in turn: beside the link's target, or from the package.
    "alumet_config_render": Plugin(
        "alumet_config_render.py", "alumet_config_render", True,
        _filter(f"('rapl' | FILTER('{ROOT / 'templates'}', {{'alumet_config_csv_delimiter': '\U0001f600'}})).text"),
        lambda r: 'csv_delimiter = "\U0001f600"' in str(r.get("msg"))),
    # Loads nothing of the project: the wheel's copy runs as it is.
    "alumet_setting_errors": Plugin(
        "alumet_setting_rules.py", "alumet_setting_errors", True,
        _filter("{'perf_paranoid_value': 5, 'alumet_group_name': 'alumet'} | FILTER"),
        lambda r: r.get("msg") == ["perf_paranoid_value=5: must be between -1 and 4"]),
    "alumet_bounding_set_refusal": Plugin(
        "alumet_capabilities.py", "alumet_bounding_set_refusal", True,
        _filter("'CapBnd: 00000000800405fb' | FILTER('cap_perfmon,cap_sys_nice=ep')"),
        lambda r: "start the container with --cap-add=SYS_NICE,PERFMON" in str(r.get("msg"))),
}


@dataclass(frozen=True)
class Form:
    bin: Path                # the directory of this form's ansible
    env: dict[str, str]
    cwd: Path
    fqcn: bool               # plugins named alumet.setup.NAME (collection) or by their short name


def _roles_env(roles: Path) -> dict[str, str]:
    """Ansible's plugin paths at the roles' library/ and filter_plugins/, as a play of those roles has them."""
    return {"ANSIBLE_LIBRARY": os.pathsep.join(sorted(str(p) for p in roles.glob("*/library"))),
            "ANSIBLE_FILTER_PLUGINS": os.pathsep.join(sorted(str(p) for p in roles.glob("*/filter_plugins")))}


@pytest.fixture(scope="module")
def checkout_form() -> Form:
    return Form(Path(sys.executable).parent, {**os.environ, **_roles_env(ROOT / "roles")}, ROOT, fqcn=False)


@pytest.fixture(scope="module")
def wheel_form(tool: installed_tool.InstalledTool) -> Form:
    """The tool's own venv and its bundled roles, found by the installed package itself."""
    where = subprocess.run(
        [str(tool.program.parent / "python"), "-c",
         "from alumet_setup.hostside import resources; print(resources.bundled('roles'))"],
        cwd=tool.workdir, env=tool.env(), capture_output=True, text=True, check=True)
    roles = Path(where.stdout.strip())
    assert ROOT not in roles.parents and roles.parts[-3:] == ("alumet_setup", "_bundled", "roles"), roles
    assert not any(p.is_symlink() for p in roles.rglob("*.py"))  # a wheel has no links: copies
    return Form(tool.program.parent, tool.env(**_roles_env(roles)), tool.workdir, fqcn=False)


@pytest.fixture(scope="module")
def collection_form(tmp_path_factory: pytest.TempPathFactory) -> Form:
    base = tmp_path_factory.mktemp("collection-form")
    env = installed_tool.user_env()
    user_bin = collection.ansible_user(base / "venv", env)
    # The test's premise: nothing outside the collection can stand in for a file it lacks.
    probe = subprocess.run([str(user_bin / "python"), "-c", "import alumet_setup"], cwd=base, env=env,
                           capture_output=True, check=False)
    assert probe.returncode != 0, "the Ansible user's venv imports alumet_setup"
    collections = collection.install(base, galaxy=user_bin / "ansible-galaxy")
    return Form(user_bin, {**env, "ANSIBLE_COLLECTIONS_PATH": str(collections)}, base, fqcn=True)


def test_every_plugin_file_is_covered() -> None:
    """A new module or filter file gets a case here, or this fails."""
    files = {p.name for pattern in PLUGIN_GLOBS for p in ROOT.glob(pattern)}
    assert files == {p.file for p in PLUGINS.values()}


@pytest.mark.parametrize("name", sorted(PLUGINS))
@pytest.mark.parametrize("form_name", ["checkout", "wheel", "collection"])
def test_plugin_loads_in_form(form_name: str, name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    form: Form = request.getfixturevalue(f"{form_name}_form")
    plugin = PLUGINS[name]
    called = f"alumet.setup.{plugin.module}" if form.fqcn else plugin.module
    args = plugin.args(tmp_path).replace("FILTER", called)
    module = "ansible.builtin.debug" if plugin.is_filter else called
    env = {**form.env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    proc = subprocess.run([str(form.bin / "ansible"), "localhost", "--check", "-m", module, "-a", args],
                          cwd=form.cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # ansible-core's ad-hoc output (its minimal callback): `localhost | SUCCESS => {JSON}`.
    result = json.loads(proc.stdout.split(" => ", 1)[1])
    assert plugin.check(result), result
