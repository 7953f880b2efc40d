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
              help="Check this host over SSH (user@host:port, a name from ~/.ssh/config, or a testinfra "
                   "URL such as podman://NAME). Default: this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON report on stdout.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Alumet configuration to validate. Default: /etc/alumet/alumet-config.toml.")
@click.option("--agent", "agent_path", default=None, metavar="PATH", help="Path of the alumet-agent binary.")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME[,NAME]",
              help="Judge readiness only for these plugins (default: all).")
@click.option("--check", "check_ids", multiple=True, metavar="ID[,ID]", help="Run only these checks.")
@click.option("--list-checks", is_flag=True, help="List the check ids and titles, then exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show fix commands for passing checks too.")
def doctor(hosts: tuple[str, ...], as_json: bool, config_path: str | None, agent_path: str | None,
           plugins: tuple[str, ...], check_ids: tuple[str, ...], list_checks: bool, verbose: bool) -> None:
    """Tell whether a host is ready for each Alumet plugin, why not, and what fixes it."""
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
    options = Options(agent_path=agent_path)
    if config_path is not None:
        _require_toml(config_path)
        options.config_path = config_path
        options.config_explicit = True

    reports = [_diagnose_one(spec, options, selected_plugins, selected_checks) for spec in hosts or (None,)]
    if as_json:
        click.echo(doc.to_json(reports))
    else:
        color = sys.stdout.isatty()
        click.echo("\n\n".join(doc.render_text(r, color=color, verbose=verbose) for r in reports))
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


def _diagnose_one(spec: str | None, options: Any, plugins: list[str] | None, checks: list[str] | None) -> Any:
    from . import doctor as doc
    from .hosts import HostError, host_from_spec

    try:
        host = host_from_spec(spec)
    except HostError as exc:
        fail(str(exc))
    return doc.diagnose(host, options, plugins=plugins, only=checks)


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
