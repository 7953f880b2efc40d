"""Facts written in more than one layer must agree: a role's defaults and its argument specs, the install
steps of the CLI, the playbooks and doctor's fixes, the collection's namespace, the supported releases."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from alumet_setup.doctor.checks import system
from alumet_setup.playbook import settings

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None


def _derived(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_agree(role: Path) -> None:
    """Every default is a documented option with the same default, and the reverse (the model is
    prometheus-community/ansible's lint_arguments_spec.sh): `alumet-setup settings` and --set read the specs,
    Ansible reads the defaults."""
    defaults = load(role / "defaults" / "main.yml") or {}
    entry_points = (load(role / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {}
    if not defaults and not entry_points:
        return  # alumet_common: task files only, every variable passed by its caller
    assert "main" in entry_points, f"{role.name}: no argument_specs for its main entry point"
    problems = []
    for entry, spec in entry_points.items():
        options = (spec or {}).get("options") or {}
        if entry == "main":
            problems += [f"{name}: in defaults/main.yml, not in the main argument spec"
                         for name in sorted(set(defaults) - set(options))]
        for name, option in options.items():
            option = option or {}
            if name not in defaults:
                if not option.get("required"):
                    problems.append(f"{entry}.{name}: optional in the spec, but no default in defaults/main.yml")
            elif _derived(defaults[name]):  # computed from other settings: the spec describes it or copies it
                if "default" in option and option["default"] != defaults[name]:
                    problems.append(f"{entry}.{name}: spec default {option['default']!r}, derived in "
                                    f"defaults/main.yml as {defaults[name]!r}")
            elif option.get("default") != defaults[name]:
                problems.append(f"{entry}.{name}: spec default {option.get('default')!r}, "
                                f"defaults/main.yml {defaults[name]!r}")
    assert not problems, f"{role.name}: " + "; ".join(problems)


def playbook_steps(name: str) -> list[str]:
    """The step tags of a playbook, in its order ('always' is not a step)."""
    steps: list[str] = []
    for play in load(ROOT / "playbooks" / name):
        for entry in [*(play.get("roles") or ()), *(play.get("tasks") or ())]:
            for tag in entry.get("tags") or ():
                if tag != "always" and tag not in steps:
                    steps.append(tag)
    return steps


def check_install_steps() -> set[str]:
    """Every step a doctor check names in install_step=: literal strings, and the literals a variable
    passed there is assigned (install_step=step) or compared with (step == "sysctl") in the same module."""
    found: set[str] = set()
    for source in sorted((ROOT / "alumet_setup" / "doctor" / "checks").glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "install_step":
                for sub in ast.walk(node.value):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        found.add(sub.value)
                    elif isinstance(sub, ast.Name):
                        names.add(sub.id)
        # A helper that takes the step as a parameter (toolchain.missing(..., step)): what its callers pass.
        params = {f.name: [a.arg for a in f.args.args] for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in params:
                args = params[node.func.id]
                passed = [*zip(args, node.args, strict=False), *((k.arg, k.value) for k in node.keywords)]
                found.update(v.value for a, v in passed
                             if a in names and isinstance(v, ast.Constant) and isinstance(v.value, str))
            if isinstance(node, ast.Compare) and isinstance(node.left, (ast.Name, ast.Attribute)):
                left = node.left.id if isinstance(node.left, ast.Name) else node.left.attr
                if left in names:
                    found.update(c.value for c in node.comparators
                                 if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return found


def test_steps_are_one_list_in_every_layer() -> None:
    install, uninstall = playbook_steps("install.yml"), playbook_steps("uninstall.yml")
    assert install == list(settings.STEPS), "playbooks/install.yml tags vs alumet_setup/doctor/findings.py STEPS"
    # Uninstall has its own order (capabilities go after hidepid and config are undone): same steps.
    assert sorted(uninstall) == sorted(settings.STEPS), "playbooks/uninstall.yml tags vs settings.STEPS"
    unknown = check_install_steps() - set(settings.STEPS)
    assert not unknown, f"doctor checks point at steps install does not have: {sorted(unknown)}"
    # The scan itself finds what it must (a check that names a step in a new way fails here, not silently).
    assert check_install_steps() >= set(settings.STEPS) - {"service"}
    # install_record's choices are filed under steps.
    names = load(ROOT / "roles" / "install_record" / "vars" / "main.yml")["install_record_names"]
    assert set(names) <= set(settings.STEPS)


def test_install_help_lists_the_steps() -> None:
    from alumet_setup.cli import install

    text = " ".join((install.help or "").split())
    default_steps = [s for s in settings.STEPS if s != "service"]
    assert f"Steps: {', '.join(default_steps)}; opt-in: service" in text


def test_each_step_runs_the_role_of_its_name() -> None:
    """Role = step, or alumet_<step> where the step's name alone is too generic for a roles path."""
    roles = settings.steps_by_role(ROOT / "playbooks" / "install.yml")
    for step in settings.STEPS:
        runs = [role for role, tags in roles.items() if step in tags]
        assert runs in ([step], [f"alumet_{step}"]), f"step {step} runs {runs}"
        assert (ROOT / "roles" / runs[0]).is_dir()


def test_roles_carry_the_collection_namespace() -> None:
    galaxy = load(ROOT / "galaxy.yml")
    for role in ROLES:
        info = load(role / "meta" / "main.yml")["galaxy_info"]
        assert (info.get("namespace"), info.get("role_name")) == (galaxy["namespace"], role.name), role.name


def test_supported_releases_are_the_same_for_roles_and_doctor() -> None:
    supported = load(ROOT / "roles" / "alumet_common" / "vars" / "main.yml")["alumet_common_supported"]
    assert {name.lower(): set(releases) for name, releases in supported.items()} == system.SUPPORTED


def test_no_role_keeps_its_own_copy_of_the_shared_tasks() -> None:
    """The distribution assert and the empty-directory removal live in roles/alumet_common only."""
    copies = []
    for path in sorted((ROOT / "roles").glob("*/*/*.yml")):
        if path.parts[-3] == "alumet_common":
            continue
        text = path.read_text(encoding="utf-8")
        for marker in ("dpkg-query, --search", "'-empty'", "_supported[", "ansible_facts['distribution'] in"):
            if marker in text:
                copies.append(f"{path.relative_to(ROOT)}: {marker}")
    assert not copies, copies


def test_doctors_oldest_rust_is_the_rustup_roles() -> None:
    """toolchain.MIN_RUST (doctor) mirrors rustup_min_version (the role that installs Rust): doctor must not
    pass a rustc the role would replace, nor fail one it keeps."""
    from alumet_setup.doctor.checks import toolchain

    role_min = load(ROOT / "roles" / "rustup" / "vars" / "main.yml")["rustup_min_version"]
    assert str(toolchain.MIN_RUST) == role_min


def test_the_schema_is_of_the_release_the_agent_role_builds() -> None:
    """alumet_schema.ALUMET_VERSION (what `config render` and doctor validate against) mirrors the tag the
    alumet_agent role builds by default: a new release changes both, or the configuration is judged by the
    wrong agent."""
    from alumet_setup.hostside import alumet_schema

    tag = load(ROOT / "roles" / "alumet_agent" / "defaults" / "main.yml")["alumet_agent_version"]
    assert tag == f"v{alumet_schema.ALUMET_VERSION}"
