"""What a host sends is shown, never obeyed: every string that comes from a host (its files, file names, mount
options, agent logs, program output, Ansible's results) reaches the text output with its control characters
escaped (alumet_setup/textsafe.py), on a terminal (colours on) and through a pipe alike; the tool's own colours
still work, and --json carries the strings exactly, escaped by JSON.

The hostile host is a fixture tree (checkhelpers.FixtureHost) built per payload: /etc/os-release's PRETTY_NAME,
the kernel release, a sysctl.d file name, /proc/self/mountinfo's hidepid option, the directory the agent's
symlink points into, the agent's log in a --probe run, the host's name and its connection error all carry it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from checkhelpers import FIXTURES, FixtureHost, probe_question, probe_ran, record_choices, result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alumet_setup import doctor, uptodate
from alumet_setup.cli import main
from alumet_setup.doctor.checks.agent_probe import TMP_PREFIX
from alumet_setup.doctor.findings import Options
from alumet_setup.playbook import runner
from alumet_setup.targets import connection, hosts
from alumet_setup.targets.hosts import CommandResult, HostError
from alumet_setup.terminal import Activity
from alumet_setup.textsafe import visible

# Each drives a terminal its own way; the keys are the test ids (the hostile inputs counted in the report).
PAYLOADS = {
    "csi-clear-screen": "\x1b[2J\x1b[H",
    "osc-title-bel": "\x1b]0;pwned\x07",
    "osc-title-st": "\x1b]2;pwned\x1b\\",
    "sgr-colour-blink": "\x1b[31;1;5m",
    "c1-csi": "\x9b2J",
    "c1-osc-st": "\x9d0;pwned\x9c",
    "overwrite-cr-bs-del": "ok\r\x08\x08\x7f",
    "c0-nul-enq-vt-ff-sub": "\x00\x05\x0b\x0c\x1a",
    "bidi-override": "\u202egnp.\u2066",
    "line-separators": "\u2028\u2029\x85",
    "forged-line": "\n  ✓ Forged  ok",
}
# The only escape sequences the text report may hold: the tool's own colours (render_text's paint).
TOOL_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
PROBE_DIR = f"{TMP_PREFIX}abc123"


def raw_controls(text: str, newlines: bool = True) -> list[str]:
    """The characters of `text` a terminal would act on (newline allowed in multi-line output)."""
    return sorted({c for c in text if not c.isprintable() and not (newlines and c == "\n")})


def assert_inert(plain: str, coloured: str | None = None) -> None:
    """`plain` (a pipe) holds no control character but newlines and forges no line; `coloured` (a terminal)
    is `plain` plus the tool's colours, nothing else."""
    assert raw_controls(plain) == [], plain
    assert not any(line.lstrip().startswith("✓ Forged") for line in plain.splitlines()), plain
    if coloured is not None:
        assert TOOL_COLOUR.search(coloured), "the tool's own colours are gone"
        assert TOOL_COLOUR.sub("", coloured) == plain


class HostileHost(FixtureHost):
    """A fixture tree whose alumet-agent, run by --probe, logs `log`; the probe's other commands succeed."""

    def __init__(self, root: Path, log: str):
        super().__init__(root, canned={"id": result("1000\n")})
        self.log = log

    def run(self, argv: Sequence[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> CommandResult:
        asked = probe_question(argv)  # the probe's run of the agent (agent.binary's --version runs the tree's script)
        if asked is not None:
            return probe_ran(argv, asked[0], 1, self.log, None, PROBE_DIR)
        return super().run(argv, timeout, env)


def in_name(payload: str) -> str:
    """The payload as a file name can hold it (no NUL, no slash)."""
    return payload.replace("\0", "").replace("/", "") or "x"


def hostile_host(tmp_path: Path, payload: str) -> HostileHost:
    """Debian 12 (sysctl fixture) with hidepid=2 (hidepid fixture) and the agent installed, `payload` in
    every host string a check reports."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "sysctl" / "debian12", root)
    for name in ("etc/fstab", "etc/group", "proc/self/mountinfo"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "hidepid" / "hidepid2" / name, root / name)
    (root / "etc/os-release").write_text(f'ID=debian\nVERSION_ID=12\nPRETTY_NAME="Debian {payload}"\n')
    (root / "proc/sys/kernel/osrelease").write_text(f"6.1.0-{payload}\n")
    # A file that overrides the tool's sysctl file at boot: its name is quoted in the detail and the fix.
    (root / "etc/sysctl.d" / f"zz-{in_name(payload)}.conf").write_text("kernel.perf_event_paranoid = 4\n")
    mountinfo = root / "proc/self/mountinfo"
    option = "".join(payload.split()).replace(",", "")  # one mountinfo field, one option
    mountinfo.write_text(mountinfo.read_text().replace("proc rw,hidepid=2", f"proc rw,hidepid={option}"))
    agent_dir = root / "opt" / in_name(payload) / "bin"
    agent_dir.mkdir(parents=True)
    shutil.copy(FIXTURES / "agent/installed/opt/alumet/bin/alumet-agent", agent_dir / "alumet-agent")
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/alumet-agent").symlink_to(f"/opt/{in_name(payload)}/bin/alumet-agent")
    log = (FIXTURES / "agent-logs" / "powercap-denied.log").read_text(encoding="utf-8")
    return HostileHost(root, log.replace("Try to adjust file permissions", f"Try to adjust {payload} permissions"))


def hostile_reports(tmp_path: Path, payload: str) -> list[doctor.Report]:
    """The hostile host, named with the payload, and an unreachable one whose ssh error carries it."""
    host = hostile_host(tmp_path, payload)

    def unreachable() -> hosts.Host:
        raise HostError(f"ssh: connect to host gone: {payload}")

    return doctor.diagnose_many([(f"lab{payload}", lambda: host), ("gone", unreachable)], Options(probe=True))


@pytest.mark.processes
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_doctor_report_shows_host_strings_escaped(tmp_path: Path, payload: str) -> None:
    reports = hostile_reports(tmp_path, payload)
    report = reports[0]
    raw = [r.id for r in report.results if raw_controls(r.finding.detail, newlines=False)]
    assert len(raw) >= 3, raw  # the host really did put control characters in the findings
    for r in reports:
        assert_inert(doctor.render_text(r), doctor.render_text(r, color=True))
        assert_inert(doctor.render_text(r, verbose=True), doctor.render_text(r, color=True, verbose=True))
    assert_inert(doctor.render_table(reports))
    # What the host sent is there to read, escaped: the sysctl file's name, whole.
    assert visible(f"/etc/sysctl.d/zz-{in_name(payload)}.conf") in doctor.render_text(report)


def _cli(args: list[str], tty: bool) -> tuple[int, str, str]:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return tty

    out, err = Terminal(), Terminal()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def hostile_connect(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """`--host lab` reaches the hostile host, `--host gone` fails with the payload; the payload returned."""
    payload = PAYLOADS["osc-title-bel"] + PAYLOADS["csi-clear-screen"] + PAYLOADS["c1-osc-st"]
    host = hostile_host(tmp_path, payload)

    def connect(target: Any, sessions: Any = None) -> hosts.Host:
        if getattr(target, "name", None) == "gone":
            raise HostError(f"gone: ssh: {payload}")
        return host

    monkeypatch.setattr(connection, "connect", connect)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return payload


@pytest.mark.processes
@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_doctor_command_on_a_terminal_and_through_a_pipe(hostile_connect: str, tty: bool) -> None:
    code, out, err = _cli(["doctor", "--probe", "--host", "lab", "--host", "gone"], tty)
    assert code == 2 and out and err.startswith("alumet-setup: error: gone: ")
    assert raw_controls(err) == []
    assert_inert(TOOL_COLOUR.sub("", out))
    assert bool(TOOL_COLOUR.search(out)) is tty  # colours on a terminal only, and only the tool's own
    assert visible(hostile_connect) in out


@pytest.mark.processes
def test_json_carries_host_strings_exactly_and_escaped(hostile_connect: str) -> None:
    code, out, _err = _cli(["doctor", "--json", "--probe", "--host", "lab", "--host", "gone"], False)
    assert code == 2 and raw_controls(out) == []
    document = json.loads(out)
    carried = {c["id"] for c in document["hosts"][0]["checks"] if hostile_connect in c["detail"]}
    assert carried == {"system.os", "system.kernel", "agent.binary", "agent.capabilities", "agent.probe",
                       "kernel.perf_event_paranoid", "procfs.hidepid"}  # exactly what the host said, each
    assert hostile_connect in document["hosts"][1]["error"]


@pytest.mark.processes
def test_install_survey_line_shows_doctor_s_objection_escaped(hostile_connect: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The host's install record says the last install applied sysctl with these very inputs and names a
    # witness file, which is now different: the survey line quotes the record's path.
    root = Path(connection.connect(None).root)
    (root / "etc" / f"{hostile_connect}.conf").write_text("changed\n")
    record_choices(root, text=json.dumps({"version": 1, "choices": {},
                                          "applied": {"sysctl": uptodate.run_digest({}, None)},
                                          "files": {f"/etc/{hostile_connect}.conf": ""}}))

    def stop(*_args: object, **_kwargs: object) -> None:
        raise runner.RunnerError("stopped before any play")

    monkeypatch.setattr(runner, "run_playbook", stop)
    code, out, err = _cli(["install", "--host", "lab", "--only", "sysctl"], True)
    assert code == 1, err
    [survey] = [line for line in out.splitlines() if line.startswith("lab: runs: /etc/")]
    assert visible(hostile_connect) in survey
    assert raw_controls(out) == [] and raw_controls(err) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _event(kind: str, host: str, task: str, **event_data: Any) -> dict[str, Any]:
    return {"event": kind, "created": "2026-01-01T00:00:00", "stdout": event_data.pop("stdout", ""),
            "event_data": {"host": host, "task": task, "task_uuid": "u1", **event_data}}


def hostile_events(p: str) -> list[dict[str, Any]]:
    """One event of each kind Progress renders, the payload in every string Ansible takes from the host."""
    host, task = f"lab{p}", f"Read {p}"
    return [
        _event("runner_on_start", host, task),
        _event("runner_on_ok", host, task, task_action="ansible.builtin.debug",
               res={"changed": True, "msg": f"would write {p}\nline two {p}"}),
        _event("runner_on_ok", host, task, task_action="ansible.builtin.copy",
               res={"changed": True, "diff": [{"before": f"a {p}\n", "after": f"b {p}\n", "before_header": p},
                                               {"prepared": f"+{p}\n"}]}),
        _event("runner_on_failed", host, task, res={"msg": f"failed: {p}", "stderr": f"error: {p}\nmore {p}",
                                                   "rc": 1}),
        _event("runner_on_failed", host, task, res={"msg": "non-zero return code", "stdout": f"E: {p}",
                                                   "module_stderr": p, "rc": 2}, ignore_errors=True),
        _event("runner_on_unreachable", host, task, res={"msg": f"ssh: {p}", "unreachable": True}),
        _event("runner_on_skipped", host, task),
        _event("runner_retry", host, task, res={"attempts": p}),
        _event("runner_on_async_poll", host, task),
        _event("verbose", host, task, stdout=f"<{host}> ESTABLISH {p}\r\n{p}\n"),
        _event("playbook_on_stats", host, task, ok={host: 1}, failures={host: 1}, processed={host: 1}),
    ]


@pytest.mark.parametrize("payload", [*PAYLOADS.values(), "\udcff\ud800"],
                         ids=[*PAYLOADS.keys(), "lone-surrogates"])
def test_install_progress_and_summary_show_host_strings_escaped(payload: str) -> None:
    lines: list[str] = []
    screen = _Terminal()  # polls and retries go to the status line of a terminal (terminal.Activity)
    progress = runner.Progress(lines.append, verbosity=1, diff=True, activity=Activity(lines.append, screen))
    for event in hostile_events(payload):
        assert progress(event) is True
    lines += runner.render_summary(progress.stats, [f"lab{payload}", "other"])
    lines += runner.render_changes(progress.changes, [f"lab{payload}"])
    assert not any(line.startswith("(progress display error") for line in lines), lines
    # Each line is one line: a newline from the host in a one-line field (host, task) is escaped, and one
    # in a message, a diff or program output starts another indented line.
    assert [line for line in lines if raw_controls(line, newlines=False)] == []
    assert sum(line.startswith(f"[lab{visible(payload)}] ") for line in lines) >= 7, lines
    drawn = screen.getvalue().split("\r\x1b[K")  # the status line's own erase, then what it shows
    assert sum(f"[lab{visible(payload)}] … Read" in text for text in drawn) == 2, drawn
    assert raw_controls("".join(drawn)) == [], drawn
    assert any(line.startswith(f"lab{visible(payload)} ") for line in lines), lines  # the summary row


def test_a_real_play_whose_program_writes_escapes(tmp_path: Path) -> None:
    # A real ansible-playbook run on this machine (local connection, files only under tmp_path): a program's
    # stdout and stderr carry escape sequences, a debug shows them, a file takes them (--diff).
    target = tmp_path / "file.txt"
    target.write_text("before\n")
    # printf's octal escapes: ESC, BEL, and C1 CSI (0x9b) and OSC (0x9d) in UTF-8.
    writes = (r"printf 'out \033[2J\033]0;pwned\007 \302\233 31m\n';"
              r" printf 'error: \033]2;t\033\\ \302\235x\n' >&2")
    tasks = [
        {"name": "A program that writes escapes", "ansible.builtin.shell": writes, "register": "out",
         "changed_when": True},
        {"name": "Show what it said", "ansible.builtin.debug": {"msg": "{{ out.stdout }}"}, "changed_when": True},
        {"name": "Write it into a file", "ansible.builtin.copy": {"dest": str(target),
                                                                   "content": "{{ out.stdout }}\n"}},
        {"name": "Fail with it", "ansible.builtin.shell": "printf '%s\\n' \"$SAID\" >&2; exit 3",
         "environment": {"SAID": "{{ out.stdout }} {{ out.stderr }}"}, "ignore_errors": True},
    ]
    playbook = tmp_path / "p.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}]))  # JSON is YAML
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    lines: list[str] = []
    result = runner.run_playbook(runner.PlaybookRun(playbook, inventory=[inventory], hosts=["localhost"], diff=True),
                                 echo=lines.append, runs_dir=tmp_path / "runs")
    assert result.ok, lines
    assert "\x1b[2J" in target.read_text()  # the escapes really went through Ansible
    assert [line for line in lines if raw_controls(line, newlines=False)] == []
    assert sum("\\x1b[2J" in line for line in lines) >= 3, lines
    assert any("\\x9d" in line for line in lines), lines


# Any text a host may send: every Unicode category, controls and surrogates above all.
host_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    st.lists(st.sampled_from([*PAYLOADS.values(), "\udcff", "é", "🧩", "\\x1b", " "]), max_size=6).map("".join),
)


@settings(max_examples=200, deadline=None)
@given(text=host_text)
def test_visible_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    shown = visible(text)
    assert raw_controls(shown, newlines=False) == []
    assert raw_controls(visible(text, newlines=True)) == []
    assert visible(text, newlines=True).count("\n") == text.count("\n")
    if text.isprintable():
        assert shown == text  # readable text is left alone


@settings(max_examples=40, deadline=None)
@given(text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_any_host_file_and_file_name_renders_inert(text: str) -> None:
    # From the host's files to the terminal: os-release's PRETTY_NAME and a sysctl.d file's name.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(FIXTURES / "sysctl" / "debian12", root)
        (root / "etc/os-release").write_text(f"ID=debian\nVERSION_ID=12\nPRETTY_NAME={shlex.quote(text)}\n")
        (root / "etc/sysctl.d" / f"zz-{in_name(text)[:60]}.conf").write_text("kernel.perf_event_paranoid = 4\n")
        report = doctor.diagnose(FixtureHost(root), only=["system.os", "kernel.perf_event_paranoid"])
    assert_inert(doctor.render_text(report, verbose=True), doctor.render_text(report, color=True, verbose=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(detail=host_text, fix=host_text, reason=host_text, name=host_text, error=host_text)
def test_any_host_string_in_a_report_renders_inert(detail: str, fix: str, reason: str, name: str,
                                                   error: str) -> None:
    from alumet_setup.doctor.findings import Finding, Status

    results = [doctor.CheckResult(check_id, check_id, check_id.split(".")[0],
                                  Finding(status, detail, fix=(fix, fix), install_step="sysctl"), 0.0)
               for check_id, status in (("system.os", Status.OK), ("kernel.perf_event_paranoid", Status.FAIL))]
    plugins = [*doctor.judge_plugins(results, ["perf"]), doctor.PluginVerdict("csv", "blocked", [reason, reason])]
    report = doctor.Report(name, doctor.settle(results, plugins), plugins, 0.1)
    gone = doctor.Report.unreachable(name, error)
    for r in (report, gone):
        assert_inert(doctor.render_text(r, verbose=True), doctor.render_text(r, color=True, verbose=True))
    assert_inert(doctor.render_table([report, gone]))
    document = doctor.to_json([report, gone])
    assert raw_controls(document) == []
    assert json.loads(document)["hosts"][0]["checks"][0]["detail"] == detail


@settings(max_examples=60, deadline=None)
@given(text=host_text)
def test_any_host_string_in_the_progress_renders_inert(text: str) -> None:
    lines: list[str] = []
    progress = runner.Progress(lines.append, verbosity=1, diff=True)
    for event in hostile_events(text):
        progress(event)
    lines += runner.render_summary(progress.stats, [f"lab{text}"])
    assert not any(line.startswith("(progress display error") for line in lines), lines
    assert [line for line in lines if raw_controls(line, newlines=False)] == []
