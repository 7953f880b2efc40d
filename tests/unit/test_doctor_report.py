"""The text report of doctor as a user reads it (issue 25 item 2): short and in the order of doing by default,
every detail with -v, the problems alone with -q, wrapped to the terminal, a fresh host on one 80x24 screen."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import jsonschema
import pytest
from checkhelpers import fresh_host, fresh_tree

from alumet_setup import doctor
from alumet_setup.doctor.findings import Finding, Status

UNIT = Path(__file__).resolve().parent
SCHEMA = json.loads((UNIT.parents[1] / "docs" / "doctor-schema.json").read_text())
SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def fresh(tmp_path: Path) -> doctor.Report:
    """The real checks on the fresh host (checkhelpers.fresh_host): no agent, no RAPL, no configuration."""
    return doctor.diagnose(fresh_host(fresh_tree(tmp_path / "root")))


def test_default_report_says_each_cause_once_in_the_order_of_doing(fresh: doctor.Report) -> None:
    by_id = {r.id: r.finding for r in fresh.results}
    binary = by_id["agent.binary"].detail
    # What the fresh host is: the agent's absence explains three more problems.
    assert by_id["agent.capabilities"].status is Status.WARN and by_id["kernel.perf_probe"].status is Status.FAIL
    text = doctor.render_text(fresh)
    lines = text.splitlines()
    assert text.count(binary) == 1, text  # main: in agent.binary, three plugin lines and the summary
    assert "no alumet-agent binary" not in text  # agent.capabilities' detail: it follows from agent.binary
    assert by_id["kernel.perf_probe"].detail not in text and by_id["kernel.perf_event_paranoid"].detail not in text
    assert "      causes: agent.capabilities, kernel.perf_event_paranoid, kernel.perf_probe" in lines
    assert "      blocks: perf, procfs, csv" in lines
    # Passing checks are named without their detail.
    assert "Build toolchain" in lines[1] and by_id["toolchain.git"].detail not in text
    assert by_id["procfs.hidepid"].detail not in text
    # The plugin table names the blocking check, not its detail again.
    assert "  ✗ perf, procfs, csv: blocked by agent.binary" in lines
    # Root causes in the order of doing: what blocks first, then the warnings by install step.
    starts = [line.split(":")[0] for line in lines if line[:2] in ("✗ ", "! ", "? ")]
    assert starts == ["✗ agent.binary", "! config.file", "! system.virtualization"]
    assert lines[-1] == "Next: alumet-setup install"
    assert sum(line.startswith("Next:") for line in lines) == 1


def _result(check_id: str, status: Status, step: str | None = None, fix: str | None = None) -> doctor.CheckResult:
    finding = Finding(status, f"{check_id} detail", fix=fix, install_step=step)
    return doctor.CheckResult(check_id, check_id, check_id.split(".")[0], finding, 0.0)


def _report(results: list[doctor.CheckResult], plugins: list[str]) -> doctor.Report:
    verdicts = doctor.judge_plugins(results, plugins)
    return doctor.Report("h", doctor.settle(results, verdicts), verdicts, 0.0)


def test_what_blocks_comes_first_then_the_install_steps_in_order() -> None:
    report = _report([
        _result("agent.binary", Status.OK), _result("kernel.perf_probe", Status.OK),
        _result("toolchain.git", Status.WARN, "prereqs", "sudo apt-get install -y git"),
        _result("procfs.hidepid", Status.FAIL, "hidepid", "sudo mount -o remount /proc"),
        _result("kernel.perf_event_paranoid", Status.FAIL, "sysctl", "sudo sysctl -w kernel.perf_event_paranoid=2"),
        _result("config.file", Status.WARN, "config"),
    ], ["perf", "procfs"])
    order = [p.result.id for p in doctor.problems(report)]
    assert order == ["kernel.perf_event_paranoid", "procfs.hidepid", "toolchain.git", "config.file"]
    assert doctor.next_step(report) == "alumet-setup install --only sysctl"
    # The one command per problem: the install step rather than the manual command (-v shows those).
    assert "      fix: alumet-setup install --only hidepid" in doctor.render_text(report).splitlines()
    ready = _report([_result("agent.binary", Status.OK), _result("config.file", Status.WARN, "config")], ["csv"])
    assert ready.ready
    assert doctor.render_text(ready).splitlines()[-1] == \
        "Next: nothing, this host is ready (to improve it: alumet-setup install --only config)"


def test_verbose_shows_every_detail_and_quiet_only_the_problems(fresh: doctor.Report) -> None:
    verbose = doctor.render_text(fresh, verbose=True)
    for r in fresh.results:
        assert r.finding.detail in verbose, r.id
    for p in fresh.plugins:
        for reason in p.reasons:
            assert reason in verbose, p.plugin
    assert fresh.summary() in verbose and verbose.splitlines()[-1] == "Next: alumet-setup install"
    quiet = doctor.render_text(fresh, quiet=True).splitlines()
    assert quiet[0] == "alumet-setup doctor: fixture" and quiet[-1] == "Next: alumet-setup install"
    heads = [line for line in quiet[1:-1] if not line.startswith(" ")]
    assert [h.split(":")[0] for h in heads] == ["✗ agent.binary", "! config.file", "! system.virtualization"]
    assert not any(line.startswith(("✓", "–", "Not ready", "  ✗", "  –")) for line in quiet)


def test_lines_wrap_between_words_to_the_width() -> None:
    text = "  ✓ Title     one two three-four /a/long/path/that/does/not/fit/on/one/line/at/all five"
    lines = doctor.wrap(text, 30, hang=6)
    assert all(len(line) <= 30 for line in lines), lines
    assert lines[0].startswith("  ✓ Title") and all(line.startswith("      ") for line in lines[1:])
    assert "three-four" in " ".join(lines)  # never cut at a hyphen
    words = [w for line in lines for w in line.split()]
    assert [w for w in words if "/" not in w] == ["✓", "Title", "one", "two", "three-four", "five"]
    assert "".join(w for w in words if "/" in w) == "/a/long/path/that/does/not/fit/on/one/line/at/all"
    assert doctor.wrap(text, None) == [text]


def test_coloured_report_wraps_like_the_plain_one(fresh: doctor.Report) -> None:
    plain = doctor.render_text(fresh, width=60)
    coloured = doctor.render_text(fresh, color=True, width=60)
    assert SGR.search(coloured) and SGR.sub("", coloured) == plain
    assert max(len(line) for line in plain.splitlines()) <= 60


@pytest.mark.processes
def test_doctor_honours_columns_and_leaves_a_pipe_unwrapped(tmp_path: Path) -> None:
    root = fresh_tree(tmp_path / "root")

    def doctor_output(*args: str, columns: str | None) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"HOME": "/root"}
        env |= {"COLUMNS": columns} if columns else {}
        run = subprocess.run([sys.executable, "-c", CHILD.format(unit=str(UNIT)), str(root), *args],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
        assert run.returncode == 1, run.stderr
        return run.stdout.splitlines()

    for args in ([], ["-v"], ["-q"]):
        assert max(len(line) for line in doctor_output(*args, columns="50")) <= 50, args
    # Through a pipe without COLUMNS a line stays whole, for grep.
    [perf] = [line for line in doctor_output("-v", columns=None) if line.startswith("  ✗ perf ")]
    assert perf.endswith("/root/.cargo/bin") and len(perf) > 100, perf


# ---- the fresh host on a real terminal of 80x24

CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {unit!r})
from checkhelpers import fresh_host
from alumet_setup.targets import connection
from alumet_setup.cli import main
host = fresh_host(Path(sys.argv[1]))
connection.connect = lambda target, sessions=None: host
main(["doctor", *sys.argv[2:]])
"""


def on_terminal(root: Path, *args: str, rows: int = 24, columns: int = 80) -> tuple[int, str]:
    """Run doctor on the fresh host with its output on a pseudo-terminal of `columns` x `rows`: what the
    terminal received (\\r\\n line ends) and the exit code. COLUMNS and LINES unset: the size is the terminal's."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"], env["HOME"] = "xterm", "/root"  # HOME: the cargo directory doctor names, as in README
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(unit=str(UNIT)), str(root), *args],
                             stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    received = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                raise AssertionError(f"no output for 60 s: {received!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(master)
        code = child.wait(timeout=60)
    return code, received.decode()


def screen_rows(output: str, columns: int) -> list[str]:
    """The rows the output takes on the terminal (a line longer than the terminal wraps), colours removed."""
    rows = []
    for line in SGR.sub("", output).removesuffix("\r\n").split("\r\n"):
        rows += [line[i:i + columns] for i in range(0, max(len(line), 1), columns)]
    return rows


@pytest.mark.processes
def test_a_fresh_host_fits_one_80x24_screen_with_the_next_line(tmp_path: Path) -> None:
    root = fresh_tree(tmp_path / "root")
    code, output = on_terminal(root)
    assert code == 1, output
    assert SGR.search(output), "a terminal gets colours"
    rows = screen_rows(output, 80)
    assert all(len(row) <= 80 for row in SGR.sub("", output).split("\r\n")), "the report wraps, not the terminal"
    # Every row of the report and the shell's next prompt on the 24 rows: nothing scrolled away.
    assert len(rows) + 1 <= 24, "\n".join(rows)
    assert rows[0] == "alumet-setup doctor: localhost" and rows[-1] == "Next: alumet-setup install"
    quiet_code, quiet = on_terminal(root, "-q")
    assert quiet_code == 1 and screen_rows(quiet, 80)[-1] == "Next: alumet-setup install"
    # The same report on a narrow terminal wraps to it.
    _, narrow = on_terminal(root, rows=24, columns=50)
    assert max(len(line) for line in SGR.sub("", narrow).split("\r\n")) <= 50


# ---- --json stays the full record, whatever -q or -v say

@pytest.mark.processes
def test_json_is_one_document_with_a_hosts_list_whatever_q_or_v(tmp_path: Path) -> None:
    root = fresh_tree(tmp_path / "root")
    documents = []
    for args in (["--json"], ["--json", "-q"], ["--json", "-v"]):
        run = subprocess.run([sys.executable, "-c", CHILD.format(unit=str(UNIT)), str(root), *args],
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 1 and run.stderr == "", (args, run.stderr)
        document = json.loads(run.stdout)  # one document, nothing else on stdout
        jsonschema.validate(document, SCHEMA)
        for host in document["hosts"]:
            host.pop("seconds")
        documents.append(document)
    assert documents[0] == documents[1] == documents[2]
    [host] = documents[0]["hosts"]
    checks = {c["id"]: c for c in host["checks"]}
    # The full record: every detail and fix, the plugin reasons with their details.
    assert checks["agent.capabilities"]["detail"] == "no alumet-agent binary"
    assert checks["kernel.perf_probe"]["install"] == "alumet-setup install --only agent"
    assert host["plugins"]["perf"]["reasons"][0].startswith("agent.binary: no alumet-agent in PATH")


def test_a_problem_with_a_cause_of_its_own_stands_alone() -> None:
    """A consequence is folded under its cause only when that cause's fix covers it: perf_event_paranoid
    that also names a sysctl.d file overriding the tool's (a command of its own) stays a problem of its own."""
    setcap = "sudo setcap 'cap_perfmon=ep cap_sys_nice=ep' /opt/alumet/bin/alumet-agent"
    caps = _result("agent.capabilities", Status.FAIL, "capabilities", setcap)
    only_caps = _result("kernel.perf_event_paranoid", Status.FAIL, "capabilities", setcap)
    assert doctor.follows_from([caps, only_caps]) == {"kernel.perf_event_paranoid": "agent.capabilities"}
    own = Finding(Status.FAIL, "live 2 without cap_perfmon; /etc/sysctl.d/zz.conf (3) overrides it at boot",
                  fix=["sudo sed -i -E 's/^kernel/# kernel/' /etc/sysctl.d/zz.conf", setcap],
                  install_step="capabilities")
    overridden = doctor.CheckResult("kernel.perf_event_paranoid", "p", "kernel", own, 0.0)
    assert doctor.follows_from([caps, overridden]) == {}
    text = doctor.render_text(_report([_result("agent.binary", Status.OK), caps, overridden,
                                       _result("kernel.perf_probe", Status.OK)], ["perf"]))
    assert "/etc/sysctl.d/zz.conf (3) overrides it at boot" in text


def test_readme_shows_the_report_of_a_fresh_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's example is the fresh host's report at 80 columns, as root sees it (doctor also looks for
    alumet-agent in the caller's ~/.cargo/bin)."""
    monkeypatch.setenv("HOME", "/root")
    report = doctor.diagnose(fresh_host(fresh_tree(tmp_path / "root")))
    report.host = "localhost"
    readme = (UNIT.parents[1] / "README.md").read_text()
    example = readme.split("The report says what to do")[1].split("```\n")[1]
    assert example == doctor.render_text(report, width=80) + "\n"
