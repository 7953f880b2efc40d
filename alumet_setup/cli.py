"""The `alumet-setup` command line: parse, call, render, exit code. Nothing else lives here.

Exit codes: 0 ready / succeeded, 1 not ready / a host failed, 2 usage or connection error.
Heavy modules (ansible-runner, testinfra, jinja2) are imported inside the commands that need them,
so `alumet-setup doctor` on this host stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from . import __version__

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2


class UsageFailure(click.ClickException):
    """Bad input: printed as one line, exit 2, nothing changed."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"alumet-setup: error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    raise UsageFailure(message)


def split_csv(values: Sequence[str]) -> list[str]:
    """`--plugin a,b --plugin c` -> [a, b, c]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="alumet-setup")
def cli() -> None:
    """Prepare Linux hosts for Alumet energy measurement, and tell what still blocks it."""


@cli.command()
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Check this host over SSH: [user@]host[:port], a name from ~/.ssh/config, a host or group "
                   "of --inventory, or a testinfra URL such as podman://NAME. Repeatable: hosts are checked in "
                   "parallel. Default: this machine.")
@click.option("-i", "--inventory", default=None, metavar="FILE",
              help="Ansible inventory (INI or YAML): --host names its hosts or groups (none: all of them), "
                   "reached with their ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file "
                   "and ansible_ssh_common_args.")
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON report on stdout.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Alumet configuration to validate. Default: /etc/alumet/alumet-config.toml.")
@click.option("--agent", "agent_path", default=None, metavar="PATH", help="Path of the alumet-agent binary.")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME[,NAME]",
              help="Judge readiness only for these plugins (default: all).")
@click.option("--check", "check_ids", multiple=True, metavar="ID[,ID]", help="Run only these checks.")
@click.option("--list-checks", is_flag=True, help="List the check ids and titles, then exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show fix commands for passing checks too.")
@click.option("--probe", is_flag=True,
              help="Also start alumet-agent for a second (rapl + csv in a temporary directory) and report "
                   "what each plugin really measured (check agent.probe).")
def doctor(hosts: tuple[str, ...], inventory: str | None, as_json: bool, config_path: str | None,
           agent_path: str | None, plugins: tuple[str, ...], check_ids: tuple[str, ...], list_checks: bool,
           verbose: bool, probe: bool) -> None:
    """Tell whether a host is ready for each Alumet plugin, why not, and what fixes it.

    Exit code: 0 every host ready, 1 a host not ready, 2 a host unreachable (or bad input).
    """
    from . import doctor as doc
    from .findings import REGISTRY, Options

    if list_checks:
        doc.check_ids()
        for spec in REGISTRY.values():
            click.echo(f"{spec.id:32} {spec.title}")
        return
    selected_plugins = split_csv(plugins) or None
    unknown = sorted(set(selected_plugins or ()) - set(doc.PLUGINS))
    if unknown:
        fail(f"unknown plugin {', '.join(unknown)} (known: {', '.join(doc.PLUGINS)})")
    selected_checks = split_csv(check_ids) or None
    if selected_checks:
        unknown = sorted(set(selected_checks) - set(doc.check_ids()))
        if unknown:
            fail(f"unknown check {', '.join(unknown)} (see --list-checks)")
    options = Options(agent_path=agent_path, probe=probe)
    if config_path is not None:
        _require_toml(config_path)
        options.config_path = config_path
        options.config_explicit = True

    targets = _doctor_targets(hosts, inventory)
    from .hosts import SshControl, connect

    with SshControl() as control:
        connectors = [(_target_name(t), lambda t=t: connect(t, control)) for t in targets]
        reports = doc.diagnose_many(connectors, options, plugins=selected_plugins, only=selected_checks)
    for report in reports:
        if report.error is not None:
            click.echo(f"alumet-setup: error: {report.host}: {report.error}", err=True)
    if as_json:
        click.echo(doc.to_json(reports))
    else:
        color = sys.stdout.isatty()
        click.echo("\n\n".join(doc.render_text(r, color=color, verbose=verbose) for r in reports))
        if len(reports) > 1:
            click.echo("\n" + doc.render_table(reports))
    if any(r.error is not None for r in reports):
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK if all(r.ready for r in reports) else EXIT_NOT_READY)


def _require_toml(path: str) -> None:
    """An explicit --config must exist and parse: that is a usage error, not a finding."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            tomllib.load(handle)
    except FileNotFoundError:
        fail(f"--config {path}: no such file")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"--config {path}: not valid TOML: {exc}")


def _doctor_targets(hosts: Sequence[str], inventory: str | None) -> list[Any]:
    """The --host values as connect() targets, every one checked before any host is contacted."""
    from .hosts import ssh_target
    from .inventory import InventoryError, resolve_targets, ssh_targets

    try:
        if inventory is not None:
            resolve_targets(hosts, inventory)  # unknown names: the same one-line error as install
            return ssh_targets(inventory, list(hosts))
        return [ssh_target(spec) for spec in hosts] or [None]
    except InventoryError as exc:
        fail(str(exc))


def _target_name(target: Any) -> str:
    return "localhost" if target in (None, "local") else getattr(target, "name", None) or str(target)


def _play_options(command: Any) -> Any:
    """The options install and uninstall share (one definition, like exasol's option groups)."""
    options = [
        click.option("--host", "hosts", multiple=True, metavar="HOST",
                     help="Act on this host: a host or group of --inventory, or [user@]host[:port] over SSH. "
                          "Repeatable. Default: this machine (local connection)."),
        click.option("-i", "--inventory", default=None, metavar="FILE",
                     help="Ansible inventory (INI or YAML); without --host, every host in it."),
        click.option("--user", default=None, metavar="USER", help="SSH user for hosts that do not name one."),
        click.option("--only", multiple=True, metavar="STEP[,STEP]", help="Run only these steps."),
        click.option("--skip", multiple=True, metavar="STEP[,STEP]", help="Leave these steps out."),
        click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing."),
        click.option("--diff", is_flag=True, help="Show the changes made to files."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Override a role setting (checked against the roles' argument specs)."),
        click.option("-K", "--ask-become-pass", is_flag=True, help="Prompt for the sudo password."),
        click.option("--forks", default=10, show_default=True, type=click.IntRange(1, 200),
                     help="Hosts worked on in parallel."),
        click.option("--build-host", default=None, metavar="NAME",
                     help="Host that compiles alumet-agent for the hosts of its distribution, release and "
                          "architecture (default: the first of them in inventory order)."),
        click.option("--build-on-each", is_flag=True,
                     help="Compile alumet-agent on every host instead of once per distribution, release "
                          "and architecture."),
        click.option("-v", "--verbose", count=True, help="More Ansible output (repeat for more)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@_play_options
def install(**options: Any) -> None:
    """Install alumet-agent and give it access to the energy counters (default: this machine).

    Steps: prereqs, rustup, agent, group, sysctl, capabilities, hidepid, powercap, config.
    """
    _play("install", **options)


@cli.command()
@_play_options
def uninstall(**options: Any) -> None:
    """Undo what install changed, step by step (same options as install)."""
    _play("uninstall", **options)


def _play(playbook_name: str, hosts: tuple[str, ...], inventory: str | None, user: str | None,
          only: tuple[str, ...], skip: tuple[str, ...], check: bool, diff: bool, settings: tuple[str, ...],
          ask_become_pass: bool, forks: int, build_host: str | None, build_on_each: bool, verbose: int) -> None:
    """Validate every input (nothing runs before that), run the playbook, render the summary."""
    import shlex

    from . import resources, runner
    from .inventory import InventoryError, build_inventory, expand_hosts, resolve_targets
    from .settings import STEPS, SettingError, load_specs, parse_settings

    only_steps, skip_steps = split_csv(only), split_csv(skip)
    unknown = sorted(set(only_steps + skip_steps) - set(STEPS), key=(only_steps + skip_steps).index)
    if unknown:
        fail(f"unknown step {', '.join(unknown)} (known: {', '.join(STEPS)})")
    both = [s for s in only_steps if s in skip_steps]
    if both:
        fail(f"step {', '.join(both)} is both in --only and --skip")
    try:
        roles = resources.bundled("roles")
        extravars = parse_settings(settings, load_specs(roles))
        targets = resolve_targets(hosts, inventory, user)
        playbook = resources.playbook(playbook_name)
        # Every host the play will touch, groups expanded: each gets a summary row even if it never answers.
        ad_hoc_names = [t.name for t in targets if not t.from_inventory]
        expected = ad_hoc_names + (expand_hosts(inventory, [t.name for t in targets if t.from_inventory])
                                   if inventory else [])
    except (SettingError, InventoryError, resources.ResourceMissing) as exc:
        fail(str(exc))
    if build_host is not None and build_host not in expected:
        fail(f"--build-host {build_host!r} is not one of the hosts of this run ({', '.join(expected)})")
    if build_on_each and build_host is not None:
        fail("--build-host and --build-on-each exclude each other")
    if build_on_each:
        extravars["alumet_agent_build_once"] = False
    if build_host is not None:
        extravars["alumet_agent_build_host"] = build_host

    password = None
    if ask_become_pass:
        password = click.prompt("BECOME password", hide_input=True, default="", show_default=False, err=True)
    ad_hoc = [t for t in targets if not t.from_inventory]
    try:
        result = runner.run_playbook(
            playbook, inventory=[inventory] if inventory else [],
            generated_inventory=build_inventory(ad_hoc, user=user) if ad_hoc else None,
            hosts=expected, forks=forks,
            limit=",".join(t.name for t in targets if t.from_inventory) or None,
            extravars=extravars, tags=only_steps, skip_tags=skip_steps, check=check, diff=diff,
            verbosity=verbose, remote_user=user if inventory else None, become_password=password,
            roles_path=roles, echo=click.echo,
        )
    except runner.RunnerError as exc:
        click.echo(f"alumet-setup: error: {exc}", err=True)
        sys.exit(EXIT_NOT_READY)

    click.echo("")
    for line in runner.render_summary(result.stats, result.hosts):
        click.echo(line)
    unreachable = [h for h in result.hosts if (result.stats.get(h) or {}).get("unreachable")]
    for host in unreachable:
        click.echo(f"alumet-setup: error: {host}: unreachable: {result.unreachable.get(host, 'no answer')}",
                   err=True)
    if any("sudo" in m and "password" in m for m in result.messages):
        click.echo("hint: sudo wants a password: rerun with --ask-become-pass")
    click.echo(f"Run log: {result.artifact_dir}")
    if check:
        click.echo("Check mode: nothing was changed.")
    doctor_hosts = [h for h in (t.doctor_host() for t in targets) if h]
    hint = f" -i {shlex.quote(inventory)}" if inventory else ""
    hint += "".join(f" --host {shlex.quote(h)}" for h in doctor_hosts)
    if result.ok:  # after a failure the failed task's message is what to read, not doctor
        click.echo(f"Next: alumet-setup doctor{hint}")
    if unreachable:
        sys.exit(EXIT_USAGE)  # as doctor: 2 when a host could not be reached, 1 when one failed
    sys.exit(EXIT_OK if result.ok else EXIT_NOT_READY)


@cli.group()
def config() -> None:
    """Render and validate Alumet configuration files (profiles: templates/alumet-config/)."""


@config.command("render")
@click.option("--profile", "profile_name", default="energy-attribution", show_default=True, metavar="NAME",
              help="energy-attribution, rapl, rapl-perf or nvml.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a profile parameter (repeatable); --list-parameters shows them.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write FILE atomically instead of printing.")
@click.option("--list-parameters", is_flag=True, help="List the profile's parameters and defaults, then exit.")
def config_render(profile_name: str, settings: tuple[str, ...], output: str | None, list_parameters: bool) -> None:
    """Print (or write) the configuration of a profile; nothing is written unless it validates."""
    from . import profiles

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
    try:
        profiles.write_atomic(output, text)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"wrote {output} (profile {profile.name})", err=True)


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def config_validate(file: str) -> None:
    """Check FILE against the configuration schema of the pinned alumet-agent; exit 1 when invalid."""
    from . import alumet_schema

    try:
        with open(file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")
    errors = alumet_schema.validate_text(text)
    for error in errors:
        click.echo(f"{file}: {error}")
    if errors:
        sys.exit(EXIT_NOT_READY)
    click.echo(f"{file}: valid for alumet-agent {alumet_schema.ALUMET_VERSION}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: Click's usage errors become one line and exit 2."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="alumet-setup", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("alumet-setup: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        click.echo(f"alumet-setup: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
