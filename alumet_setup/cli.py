"""The `alumet-setup` command line: parse, call, render, exit code. Nothing else lives here: install and
uninstall are play.py, step rules settings.py, the exit-code policy exits.py (shared with doctor).

Exit codes: 0 ready / succeeded, 1 not ready / a host failed, 2 usage or connection error.
Heavy modules (ansible-runner, testinfra, jinja2) are imported inside the commands that need them,
so `alumet-setup doctor` on this host stays fast.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .exits import EXIT_NOT_READY, EXIT_OK, EXIT_USAGE, Interrupted, error, exit_code


class UsageFailure(click.ClickException):
    """Bad input: printed as one line, exit 2, nothing changed."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        error(self.format_message())


def fail(message: str) -> NoReturn:
    raise UsageFailure(message)


# -i of doctor, install and uninstall: what Ansible makes of it (docs/SECURITY.md).
INVENTORY_HELP = ("Ansible inventory, read as Ansible reads it: an INI, YAML or TOML file, or a directory of them, "
                  "with the group_vars/ and host_vars/ beside it. An executable inventory is run on this machine "
                  "(as Ansible runs it) and its variables are templated: give only one you would run yourself.")


def split_csv(values: Sequence[str]) -> list[str]:
    """`--plugin a,b --plugin c` -> [a, b, c]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _complete_steps(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """STEP[,STEP]: complete the name after the last comma."""
    from .playbook.settings import STEPS

    head, comma, last = incomplete.rpartition(",")
    return [f"{head}{comma}{step}" for step in STEPS if step.startswith(last)]


def _complete_settings(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """KEY=VALUE: complete the key, and the value where the spec lists choices."""
    from click.shell_completion import CompletionItem

    from .hostside import resources
    from .playbook.settings import load_specs, value_choices

    specs = load_specs(resources.bundled("roles"))
    key, sep, value = incomplete.partition("=")
    if sep:
        option = specs.get(key)
        return [CompletionItem(f"{key}={c}") for c in (value_choices(option) if option else ()) if c.startswith(value)]
    return [CompletionItem(f"{name}=", help=specs[name].description) for name in sorted(specs)
            if name.startswith(key) and not specs[name].internal]


def _complete_parameters(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """`config render --set KEY=VALUE`: the parameters of --profile (given before it, else the default),
    and the values of a choice or a bool."""
    from click.shell_completion import CompletionItem

    from .hostside.profiles import DEFAULT_PROFILE, PROFILES

    profile = PROFILES.get(ctx.params.get("profile_name") or DEFAULT_PROFILE) or PROFILES[DEFAULT_PROFILE]
    known = {p.name: p for p in profile.parameters}
    key, sep, value = incomplete.partition("=")
    if sep:
        parameter = known.get(key)
        values = () if parameter is None else parameter.choices or (("true", "false") if parameter.kind == "bool"
                                                                     else ())
        return [CompletionItem(f"{key}={v}") for v in values if v.startswith(value)]
    return [CompletionItem(f"{name}=", help=p.help) for name, p in known.items() if name.startswith(key)]


def _complete_profiles(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from .hostside.profiles import PROFILES

    return [name for name in PROFILES if name.startswith(incomplete)]


def _complete_plugins(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from .doctor import PLUGINS

    head, comma, last = incomplete.rpartition(",")
    return [f"{head}{comma}{name}" for name in PLUGINS if name.startswith(last)]


def _complete_checks(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from .doctor import check_ids

    head, comma, last = incomplete.rpartition(",")
    return [f"{head}{comma}{name}" for name in check_ids() if name.startswith(last)]


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from .version import describe

        click.echo(f"alumet-setup, version {describe()}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version (and the commit, run from a git checkout) and exit.")
def cli() -> None:
    """Prepare Linux hosts for Alumet energy measurement, and tell what still blocks it."""


@cli.command()
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Check this host over SSH: [user@]host[:port], a name from ~/.ssh/config, a host or group "
                   "of --inventory, or a testinfra URL such as podman://NAME. Repeatable: hosts are checked in "
                   "parallel. Default: this machine.")
@click.option("-i", "--inventory", default=None, metavar="FILE",
              help=f"{INVENTORY_HELP} --host names its hosts or groups (none: all of them), reached with their "
                   "ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file and "
                   "ansible_ssh_common_args.")
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON report on stdout.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Alumet configuration to validate. Default: /etc/alumet/alumet-config.toml.")
@click.option("--agent", "agent_path", default=None, metavar="PATH", help="Path of the alumet-agent binary.")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME[,NAME]", shell_complete=_complete_plugins,
              help="Judge readiness only for these plugins (default: all).")
@click.option("--only-check", "check_ids", multiple=True, metavar="ID[,ID]", shell_complete=_complete_checks,
              help="Run only these checks (--list-checks names them).")
# Deprecated: install's --check means a dry run; doctor's old name for --only-check stays one release.
@click.option("--check", "old_check_ids", multiple=True, hidden=True)
@click.option("--list-checks", is_flag=True, help="List the check ids and titles, then exit.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show every check with its detail and fix commands, and every plugin with its reasons.")
@click.option("-q", "--quiet", is_flag=True, help="Show only the problems and the Next line.")
@click.option("--color", "color_choice", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True, help="Colours in the text report; auto: on a terminal, unless NO_COLOR is set or "
                                      "TERM=dumb.")
@click.option("--probe", is_flag=True,
              help="Also start alumet-agent for a second (rapl + csv in a temporary directory) and report "
                   "what each plugin really measured (check agent.probe).")
@click.option("--forks", default=50, show_default=True, type=click.IntRange(1, 200),
              help="Hosts read at once (each in a few commands on its own SSH connection).")
def doctor(hosts: tuple[str, ...], inventory: str | None, as_json: bool, config_path: str | None,
           agent_path: str | None, plugins: tuple[str, ...], check_ids: tuple[str, ...],
           old_check_ids: tuple[str, ...], list_checks: bool, verbose: bool, quiet: bool, color_choice: str,
           probe: bool, forks: int) -> None:
    """Tell whether a host is ready for each Alumet plugin, why not, and what fixes it.

    The report names the passing checks, says each problem once with what it blocks and the command that fixes
    it, first things first, and ends with the one command to run next.

    Exit code: 0 every host ready, 1 a host not ready, 2 a host unreachable (or bad input).
    """
    from .plugin_needs import PLUGINS

    if verbose and quiet:
        fail("-v/--verbose and -q/--quiet exclude each other")
    if old_check_ids:
        click.echo("alumet-setup: warning: doctor --check is deprecated, use --only-check", err=True)
        check_ids += old_check_ids
    if list_checks:
        _list_checks(as_json)
        return
    selected_plugins = split_csv(plugins) or None
    unknown = sorted(set(selected_plugins or ()) - set(PLUGINS))
    if unknown:
        fail(f"unknown plugin {', '.join(unknown)} (known: {', '.join(PLUGINS)})")
    selected_checks = split_csv(check_ids) or None
    if selected_checks:
        from .doctor import check_ids as known_checks

        unknown = sorted(set(selected_checks) - set(known_checks()))
        if unknown:
            fail(f"unknown check {', '.join(unknown)} (see --list-checks)")
    if config_path is not None:
        _require_toml(config_path)
    targets = _doctor_targets(hosts, inventory)
    from .targets.connection import connect, connect_early
    from .targets.ssh import SshSessions

    with SshSessions() as sessions:
        # Every input checked: connect now, and load doctor's checks while the handshakes go on.
        connect_early(targets, sessions, forks)
        from . import doctor as doc
        from .doctor.findings import Options

        options = Options(agent_path=agent_path, probe=probe)
        if config_path is not None:
            options.config_path = config_path
            options.config_explicit = True
        connectors = [(_target_name(t), lambda t=t: connect(t, sessions)) for t in targets]
        reports = doc.diagnose_many(connectors, options, plugins=selected_plugins, only=selected_checks,
                                    workers=forks)
    for report in reports:
        if report.error is not None:
            error(f"{report.host}: {report.error}")
    if as_json:
        click.echo(doc.to_json(reports))
    else:
        from .terminal import use_color

        color = use_color(color_choice, sys.stdout)
        # COLUMNS, else the terminal's width; through a pipe, one line per line (for grep), unless COLUMNS says.
        width = shutil.get_terminal_size().columns if os.environ.get("COLUMNS") or sys.stdout.isatty() else None
        click.echo("\n\n".join(doc.render_text(r, color=color, verbose=verbose, quiet=quiet, width=width)
                               for r in reports), color=color)
        if len(reports) > 1:
            click.echo("\n" + doc.render_table(reports))
    sys.exit(exit_code(any(r.error is not None for r in reports), all(r.ready for r in reports)))


def _list_checks(as_json: bool) -> None:
    """doctor --list-checks: every check's id and title, and the plugins its failure blocks."""
    from . import doctor as doc
    from .doctor.findings import REGISTRY

    doc.check_ids()
    if as_json:
        import json

        click.echo(json.dumps({"checks": [
            {"id": spec.id, "title": spec.title, "group": spec.group,
             "blocks": [p for p, needs in doc.PLUGINS.items() if spec.id in needs.required],
             "degrades": [p for p, needs in doc.PLUGINS.items() if spec.id in needs.recommended]}
            for spec in REGISTRY.values()]}, indent=2))
        return
    for spec in REGISTRY.values():
        blocks = [p for p, needs in doc.PLUGINS.items() if spec.id in needs.required]
        click.echo(f"{spec.id:32} {spec.title}" + (f" (blocks {', '.join(blocks)})" if blocks else ""))


def _require_toml(path: str) -> None:
    """An explicit --config must exist and parse: that is a usage error, not a finding."""
    import tomllib

    from .hostside.alumet_schema import parse_toml
    from .hostside.safe_io import UnsafeFile, read_text

    try:
        parse_toml(read_text(path))
    except UnsafeFile as exc:
        fail(f"--config {path}: {exc}")
    except tomllib.TOMLDecodeError as exc:
        fail(f"--config {path}: not valid TOML: {exc}")


def _doctor_targets(hosts: Sequence[str], inventory: str | None) -> list[Any]:
    """The --host values as connect() targets, every one checked before any host is contacted."""
    from .playbook.inventory import InventoryError, resolve_hosts

    try:
        resolved = resolve_hosts(hosts, inventory, doctor=True)
    except InventoryError as exc:
        fail(str(exc))
    # One row per label: a host given twice, or this machine as both local and localhost, is checked once.
    unique: dict[str, Any] = {}
    for _, target in resolved.reached:
        unique.setdefault(_target_name(target), target)
    return list(unique.values())


def _target_name(target: Any) -> str:
    return "localhost" if target in (None, "local") else getattr(target, "name", None) or str(target)


def _apply(command: Any, options: Sequence[Any]) -> Any:
    for option in reversed(options):
        command = option(command)
    return command


def _play_options(command: Any) -> Any:
    """The options install and uninstall share (one definition, like exasol's option groups)."""
    return _apply(command, [
        click.option("--host", "hosts", multiple=True, metavar="HOST",
                     help="Act on this host: a host or group of --inventory, or [user@]host[:port] over SSH. "
                          "Repeatable. Default: this machine (local connection)."),
        click.option("-i", "--inventory", default=None, metavar="FILE",
                     help=f"{INVENTORY_HELP} Without --host, every host in it."),
        click.option("--user", default=None, metavar="USER", help="SSH user for hosts that do not name one."),
        click.option("--only", multiple=True, metavar="STEP[,STEP]", shell_complete=_complete_steps,
                     help="Run only these steps."),
        click.option("--skip", multiple=True, metavar="STEP[,STEP]", shell_complete=_complete_steps,
                     help="Leave these steps out."),
        click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing."),
        # uninstall edits files too (the fstab restored from its backup, the sysctl line removed).
        click.option("--diff", is_flag=True, help="Show the changes made to files."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", shell_complete=_complete_settings,
                     help="Override a role setting (checked against the roles' argument specs; "
                          "`alumet-setup settings` lists them)."),
        click.option("-K", "--ask-become-pass", is_flag=True, help="Prompt for the sudo password."),
        click.option("--forks", default=10, show_default=True, type=click.IntRange(1, 200),
                     help="Hosts worked on in parallel."),
        click.option("-v", "--verbose", count=True,
                     help="Also skipped tasks, argument checks and Ansible's own output (repeat for more)."),
    ])


def _build_options(command: Any) -> Any:
    """Where alumet-agent is compiled: install only (uninstall compiles nothing)."""
    return _apply(command, [
        click.option("--build-host", default=None, metavar="NAME",
                     help="Host that compiles alumet-agent for the hosts of its OS family and architecture "
                          "whose glibc is not older than its own (default: the host with the oldest glibc)."),
        click.option("--build-on-each", is_flag=True,
                     help="Compile alumet-agent on every host instead of once for the hosts that can run "
                          "the same binary."),
        click.option("--full", is_flag=True,
                     help="Run every step on every host, even on hosts the last install left up to date with "
                          "the same settings (by default they are surveyed with doctor's checks and left out)."),
    ])


@cli.command()
@_play_options
@_build_options
def install(**options: Any) -> None:
    """Install alumet-agent and give it access to the energy counters (default: this machine).

    Steps: prereqs, rustup, agent, group, sysctl, hidepid, powercap, config, capabilities; opt-in: service
    (--only service, or --set alumet_service_enabled=true).
    """
    _play("install", options)


@cli.command()
@_play_options
def uninstall(**options: Any) -> None:
    """Undo what install changed, step by step (the options of install that apply)."""
    _play("uninstall", options)


def _play(playbook_name: str, options: dict[str, Any]) -> NoReturn:
    from . import play

    try:
        sys.exit(play.play(play.PlayRequest(playbook_name, **options)))
    except play.BadInput as exc:
        fail(str(exc))


@cli.command("settings")
@click.option("--step", "steps", multiple=True, metavar="STEP[,STEP]", shell_complete=_complete_steps,
              help="Only the settings of these steps.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of settings, in the listing's order.")
def settings_command(steps: tuple[str, ...], as_json: bool) -> None:
    """List every setting `install --set` accepts, by step: type, default, allowed values, description.
    Variables alumet-setup sets itself (the run's digest, where the templates are) are left out."""
    import json
    import textwrap

    from .hostside import resources
    from .playbook.settings import SettingError, by_step, check_steps, describe, load_specs, split_steps, to_json

    try:
        wanted = split_steps(steps, "--step") if steps else []
        check_steps(wanted)
        specs = {name: o for name, o in load_specs(resources.bundled("roles")).items() if not o.internal}
        groups = by_step(specs, resources.bundled("playbooks") / "install.yml")
    except (SettingError, resources.ResourceMissing) as exc:
        fail(str(exc))
    shown = [(step, options) for step, options in groups.items() if not wanted or step in wanted]
    if as_json:
        click.echo(json.dumps([to_json(o, step) for step, options in shown for o in options], indent=2))
        return
    for index, (step, options) in enumerate(shown):
        click.echo(("\n" if index else "") + f"{step}:")
        for option in options:
            click.echo(f"  {describe(option)}")
            if option.description:
                click.echo(textwrap.fill(option.description, 100, initial_indent=" " * 6,
                                         subsequent_indent=" " * 6))


@cli.group()
def config() -> None:
    """Render and validate Alumet configuration files (profiles: templates/alumet-config/)."""


class _ProfileOption(click.Option):
    """--profile: its default and the names its help lists come from profiles.py, imported only when
    `config render` runs or shows its help (doctor's start-up does not pay for it)."""

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        from .hostside.profiles import DEFAULT_PROFILE

        return DEFAULT_PROFILE

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from .hostside.profiles import DEFAULT_PROFILE, PROFILES

        names = [f"{p.name} (the service's)" if p.name == DEFAULT_PROFILE
                 else f"{p.name} (exec)" if p.runs == ("exec",) and "exec" not in p.name else p.name
                 for p in PROFILES.values()]
        self.help = f"{', '.join(names[:-1])} or {names[-1]}."
        return super().get_help_record(ctx)


@config.command("render")
@click.option("--profile", "profile_name", cls=_ProfileOption, show_default=True, metavar="NAME",
              shell_complete=_complete_profiles)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", shell_complete=_complete_parameters,
              help="Override a profile parameter (repeatable); --list-parameters shows them.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write FILE atomically instead of printing (a new file, or a regular file with --force).")
@click.option("--force", is_flag=True, help="Replace FILE when it exists.")
@click.option("--follow-symlink", is_flag=True, help="When FILE is a symbolic link, write to its target.")
@click.option("--list-parameters", is_flag=True, help="List the profile's parameters and defaults, then exit.")
def config_render(profile_name: str, settings: tuple[str, ...], output: str | None, force: bool,
                  follow_symlink: bool, list_parameters: bool) -> None:
    """Print (or write) the configuration of a profile; nothing is written unless it validates."""
    from .hostside import profiles

    try:
        profile = profiles.get_profile(profile_name)
        if list_parameters:
            for p in profile.parameters:
                click.echo(f"{p.name:28} {str(p.default).lower() if p.kind == 'bool' else p.default:20} {p.help}")
            return
        text = profiles.render(profile.name, profiles.parse_settings(profile, settings))
    except profiles.ProfileError as exc:
        fail(str(exc))
    if output is None:
        click.echo(text, nl=False)
        return
    from .hostside.safe_io import UnsafeFile, write_output

    try:
        write_output(output, text, force=force, follow_symlinks=follow_symlink)
    except UnsafeFile as exc:
        fail(f"cannot write {output}: {exc}")
    click.echo(f"wrote {output} (profile {profile.name})", err=True)


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--for", "run", type=click.Choice(["service", "exec"]), default=None,
              help="How the agent will run FILE: service (alumet.service, `alumet-agent run`: warns about what "
                   "only exec/watch measures, ${VAR} from the service's environment) or exec (`alumet-agent "
                   "exec`/`watch`, ${VAR} from yours). Default: ${VAR} from yours, no warning.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document on stdout: file, valid, the agent version, and the problems "
                   "(errors, or warnings when valid), each with its severity and message.")
def config_validate(file: str, run: str | None, as_json: bool) -> None:
    """Check FILE against the configuration schema of the pinned alumet-agent; exit 1 when invalid."""
    from .hostside import alumet_schema
    from .hostside.safe_io import UnsafeFile, read_text

    try:
        text = read_text(file)
    except UnsafeFile as exc:
        fail(f"{file}: {exc}")
    env = alumet_schema.service_environment(None, file) if run == "service" else None
    errors = alumet_schema.validate_text(text, env)
    service_doc = None
    if not errors and env is not None:
        service_doc = alumet_schema.parse_toml(alumet_schema.substitute_env(text, env))  # validate_text parsed it
        errors = alumet_schema.service_write_problems(service_doc)
    warnings: list[str] = []
    if not errors:
        # Valid: validate_text substituted and parsed it alike (env is None when not for the service).
        doc = service_doc if service_doc is not None else alumet_schema.parse_toml(
            alumet_schema.substitute_env(text, os.environ))
        warnings = alumet_schema.unjudged_plugins(doc)
        if service_doc is not None:
            warnings += alumet_schema.event_only_measurements(service_doc)
    if as_json:
        import json

        problems = [{"severity": "error", "message": e} for e in errors] + \
                   [{"severity": "warning", "message": w} for w in warnings]
        click.echo(json.dumps({"file": file, "valid": not errors, "for": run,
                               "alumet_version": alumet_schema.ALUMET_VERSION, "problems": problems}, indent=2))
    else:
        for error in errors:
            click.echo(f"{file}: {error}")
        for warning in warnings:
            click.echo(f"{file}: warning: {warning}")
        if not errors:
            click.echo(f"{file}: valid for alumet-agent {alumet_schema.ALUMET_VERSION}" + (f" ({run})" if run else ""))
    if errors:
        sys.exit(EXIT_NOT_READY)


def _terminated(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: Click's usage errors become one line and exit 2; Ctrl-C and SIGTERM exit
    128 + the signal's number (130, 143), after every finally block ran (the runner's cleanup among them).
    The whole run keeps the user's Ansible configuration away from the tool's own Ansible (ansible_config.py)."""
    import signal

    from .hostside.resources import ResourceMissing
    from .playbook.ansible_config import isolated

    signal.signal(signal.SIGTERM, _terminated)  # the default would end the process without any cleanup
    try:
        with isolated():
            cli.main(args=list(argv) if argv is not None else None, prog_name="alumet-setup", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `alumet-setup` alone: the help, not an error
        click.echo(exc.ctx.get_help())
        sys.exit(EXIT_OK)
    except Interrupted as exc:
        click.echo(f"alumet-setup: interrupted ({exc})", err=True)
        sys.exit(128 + exc.signum)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # Ctrl-C outside a play (a prompt)
            click.echo("alumet-setup: interrupted (SIGINT)", err=True)
            sys.exit(128 + signal.SIGINT)
        click.echo("alumet-setup: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        error(exc.format_message())
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ResourceMissing as exc:
        error(str(exc))
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
