"""install and uninstall: every input checked before anything runs, the playbook run, the summary.

cli.py parses the options and hands them here; the exit code follows exits.exit_code, as doctor's does.
ansible-runner and the inventory code are imported inside play(): doctor never pays for them.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from .exits import EXIT_NOT_READY, error, exit_code
from .textsafe import visible

if TYPE_CHECKING:
    from .playbook.inventory import Hosts


class BadInput(ValueError):
    """A usage error found before anything ran: one line (exit 2)."""


@dataclass(frozen=True)
class PlayRequest:
    """One install or uninstall, as asked: what to run (the playbook, its steps, its settings), where (hosts,
    inventory, user) and how (check, diff, forks...). The CLI builds it; play() and the layers below read it."""

    playbook: str  # install or uninstall
    hosts: tuple[str, ...] = ()
    inventory: str | None = None
    user: str | None = None
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    check: bool = False
    diff: bool = False
    settings: tuple[str, ...] = ()
    ask_become_pass: bool = False
    forks: int = 10
    verbose: int = 0
    build_host: str | None = None
    build_on_each: bool = False
    full: bool = False


def build_settings(build_host: str | None, build_on_each: bool, hosts: Sequence[str]) -> dict[str, Any]:
    """--build-host / --build-on-each as the alumet_agent role's settings (BadInput when they do not fit)."""
    if build_host is not None and build_host not in hosts:
        raise BadInput(f"--build-host {build_host!r} is not one of the hosts of this run ({', '.join(hosts)})")
    if build_on_each and build_host is not None:
        raise BadInput("--build-host and --build-on-each exclude each other")
    extravars: dict[str, Any] = {}
    if build_on_each:
        extravars["alumet_agent_build_once"] = False
    if build_host is not None:
        extravars["alumet_agent_build_host"] = build_host
    return extravars


def play(request: PlayRequest) -> int:
    """Validate every input (nothing runs before that: BadInput), run the playbook, render the summary;
    the exit code."""
    from .hostside import resources
    from .playbook import runner
    from .playbook.inventory import InventoryError, build_inventory, resolve_hosts
    from .playbook.settings import SettingError, check_used, load_specs, parse_settings, play_steps, select_steps

    try:
        only_steps, skip_steps = select_steps(request.only, request.skip)
        roles = resources.bundled("roles")
        specs = load_specs(roles)
        extravars = parse_settings(request.settings, specs)
        playbook = resources.playbook(request.playbook)
        # The shipped playbook's step->role mapping decides which settings this run reads.
        check_used(extravars, specs, resources.bundled("playbooks") / f"{request.playbook}.yml",
                   request.playbook, only_steps, skip_steps)
        resolved = resolve_hosts(request.hosts, request.inventory, request.user)  # the inventory parsed once
        targets, expected = resolved.named, resolved.names
        runs = runner.runs_directory()
    except (SettingError, InventoryError, resources.ResourceMissing, runner.StateDirError) as exc:
        raise BadInput(str(exc)) from None
    extravars.update(build_settings(request.build_host, request.build_on_each, expected))
    steps = play_steps(playbook, only_steps, skip_steps, extravars)
    if request.playbook == "install":
        done = _up_to_date_hosts(resolved, request.inventory, only_steps, skip_steps, extravars, request.full)
        if set(done) == set(expected):
            click.echo("Nothing to run: every host is up to date (--full runs the steps anyway).")
            click.echo(f"Next: alumet-setup doctor{_doctor_hint(targets, request.inventory)}")
            return exit_code(False, True)
        if done:
            extravars["alumet_setup_up_to_date"] = done  # leave the play: roles/install_record/tasks/up_to_date.yml
    elif request.playbook == "uninstall" and _nothing_to_remove(resolved):
        click.echo("Nothing to remove: install recorded nothing on any host.")
        return exit_code(False, True)

    password = None
    # A become password in the environment (ANSIBLE_BECOME_PASS...) is answered at the prompt by the runner.
    ask_become_pass = request.ask_become_pass
    if not ask_become_pass and any(t.local for t in targets) and runner.env_become_password() is None:
        from .playbook.local_become import NoEscalation, needs_password

        try:
            ask_become_pass = needs_password()  # as a normal user, the play runs sudo itself
        except NoEscalation as exc:
            raise BadInput(str(exc)) from None
    if ask_become_pass:
        password = click.prompt("BECOME password", hide_input=True, default="", show_default=False, err=True)
    ad_hoc = [t for t in targets if not t.from_inventory]
    try:
        run = runner.PlaybookRun(
            playbook, inventory=[request.inventory] if request.inventory else [],
            generated_inventory=build_inventory(ad_hoc, user=request.user) if ad_hoc else None,
            hosts=expected, limit=",".join(t.name for t in targets if t.from_inventory) or None,
            extravars=extravars, tags=only_steps, skip_tags=skip_steps, check=request.check, diff=request.diff,
            verbosity=request.verbose, remote_user=request.user if request.inventory else None,
            forks=request.forks, roles_path=roles, steps=steps)
        result = runner.run_playbook(run, become_password=password, echo=click.echo, runs_dir=runs, live=sys.stdout)
    except runner.RunnerError as exc:
        error(str(exc))
        return EXIT_NOT_READY

    click.echo("")
    for line in runner.render_changes(result.changes, result.hosts, check=request.check):
        click.echo(line)
    click.echo("")
    for line in runner.render_summary(result.stats, result.hosts):
        click.echo(line)
    unreachable = [h for h in result.hosts if (result.stats.get(h) or {}).get("unreachable")]
    for host in unreachable:
        error(f"{host}: unreachable: {result.unreachable.get(host, 'no answer')}")
    for host in result.hosts:  # a failure says so on stderr too, not only in the progress lines
        row = result.stats.get(host)
        if host not in unreachable and (row is None or row["failed"]):
            error(result.escalation.get(host) or (f"{host}: failed (see its FAILED line above)" if row
                                                  else f"{host}: never ran"))
    if any("sudo" in m and "password" in m for m in result.messages):
        click.echo("hint: sudo wants a password: rerun with --ask-become-pass")
    click.echo(f"Run log: {result.artifact_dir}")
    if request.check:
        click.echo("Check mode: nothing was changed.")
    if result.ok:  # after a failure the failed task's message is what to read, not doctor
        click.echo(f"Next: alumet-setup doctor{_doctor_hint(targets, request.inventory)}")
    return exit_code(bool(unreachable), result.ok)


def _doctor_hint(targets: Sequence[Any], inventory: str | None) -> str:
    """The arguments of `alumet-setup doctor` that check these targets."""
    hint = f" -i {shlex.quote(inventory)}" if inventory else ""
    return hint + "".join(f" --host {shlex.quote(h)}" for h in (t.doctor_host() for t in targets) if h)


def _up_to_date_hosts(hosts: Hosts, inventory: str | None, only: Sequence[str], skip: Sequence[str],
                      extravars: dict[str, Any], full: bool) -> list[str]:
    """install's fast path (alumet_setup/uptodate.py): put the digest of this run's inputs in `extravars`
    (install_record records it), survey the hosts, say what it found; the names of the hosts left out."""
    from . import uptodate

    extravars.pop("install_record_digest", None)  # this run's own, never one typed in
    digest = uptodate.run_digest(extravars, inventory)
    if digest is None:
        return []
    extravars["install_record_digest"] = digest
    steps = uptodate.run_steps(only, skip, extravars)
    if full or not hosts.reached:
        return []
    surveys = uptodate.survey(hosts.reached, steps, digest)
    for s in surveys:
        state = "up to date, left out (--full runs it)" if s.up_to_date else f"runs: {s.reason}"
        click.echo(visible(f"{s.host}: {state} [{s.seconds:.1f}s]"))  # the reason quotes the host (textsafe)
    return [s.host for s in surveys if s.up_to_date]


def _nothing_to_remove(hosts: Hosts) -> bool:
    """uninstall's fast path (uptodate.untouched): True, having said so per host, when install recorded nothing
    on any host of the run; a host that holds a record, or cannot be read, sends the run through the play."""
    from . import uptodate

    if not hosts.reached:
        return False
    surveys = uptodate.untouched(hosts.reached)
    if not all(s.up_to_date for s in surveys):
        return False
    for s in surveys:
        click.echo(visible(f"{s.host}: install recorded nothing here, nothing to remove [{s.seconds:.1f}s]"))
    return True
