"""Doctor reads a remote host in rounds (alumet_setup/targets/batched_host.py): the same findings as a host asked one
question at a time, in a few commands. The transport here runs the command on this machine, as ssh runs it
on a host: the real host_answers.py, started by a real python3."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from alumet_setup import doctor
from alumet_setup.hostside import host_answers
from alumet_setup.targets.batched_host import MAX_ROUNDS, AnswerHost, BatchedHost, Transport, key, one_command_each
from alumet_setup.targets.hosts import CommandResult, HostError, LocalHost
from alumet_setup.targets.ssh import SshSession, SshTarget


def command_host(transport: Transport, name: str = "here") -> BatchedHost:
    """A BatchedHost that runs host_answers.py once per round through `transport`."""
    return BatchedHost(one_command_each(transport, name), name)


class Here:
    """Runs each command on this machine and counts them."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> CommandResult:
        self.commands.append(argv)
        return LocalHost().run(argv, timeout)


def findings(report: doctor.Report) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    return {r.id: (str(r.finding.status), r.finding.detail, r.finding.fix) for r in report.results}


@pytest.mark.processes
def test_doctor_in_rounds_finds_what_doctor_finds_here_check_by_check_in_a_few_commands() -> None:
    transport = Here()
    batched = doctor.diagnose(command_host(transport, "here"))
    local = doctor.diagnose(LocalHost())
    assert findings(batched) == findings(local)
    assert batched.to_json()["plugins"] == local.to_json()["plugins"]
    # One command per round; the rounds follow the checks' question chains (which -> stat -> getxattr).
    assert batched.round_trips == len(transport.commands) <= 6, batched.round_trips
    assert local.round_trips == 0


@pytest.mark.processes
def test_every_answer_of_a_batch_is_the_answer_local_host_gives() -> None:
    questions = [
        ("read_bytes", ["/etc/os-release"]), ("read_bytes", ["/nonexistent"]), ("exists", ["/proc/self"]),
        ("listdir", ["/proc/sys/kernel"]), ("stat", ["/etc", True]), ("stat", ["/proc/self", False]),
        ("readlink", ["/proc/self/exe"]), ("realpath", ["/proc/self/../self"]), ("getxattr", ["/", "user.none"]),
        ("which", ["sh", ["~/.cargo/bin"]]), ("which", ["no-such-program", []]),
    ]
    host = command_host(Here(), "here")
    host.fetch({key(op, args): (op, args) for op, args in questions})
    local = LocalHost()
    for op, args in questions:
        if op in ("readlink", "realpath") and "self" in args[0]:
            continue  # the answering process is another one: its own /proc/self
        assert getattr(host, op)(*args) == getattr(local, op)(*args), (op, args)
    ran = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (ran.rc, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    assert host.run(["no-such-program"]).rc == 127


@pytest.mark.processes
def test_a_command_runs_once_however_many_rounds_ask_for_it(tmp_path) -> None:
    counter = tmp_path / "runs"
    host = command_host(Here(), "here")

    def work() -> str:
        first = host.run(["sh", "-c", f"echo x >> {counter}; echo done"])
        # A second question that depends on the first answer: a second round.
        return host.read_text(str(counter)) if first.stdout == "done\n" else ""

    assert host.in_rounds(work) == "x\n"
    assert host.round_trips == 2
    assert counter.read_text() == "x\n"


@pytest.mark.processes
def test_rounds_stop_and_ask_what_is_left_one_by_one_when_questions_never_settle() -> None:
    host = command_host(Here(), "here")
    asked = iter(range(1000))

    def work() -> bool:  # a new question every round: never settles
        return host.exists(f"/nonexistent-{next(asked)}")

    assert host.in_rounds(work) is False
    assert host.round_trips == MAX_ROUNDS + 1


def test_a_host_without_python3_is_one_line() -> None:
    def transport(argv: list[str], timeout: float) -> CommandResult:
        return CommandResult(tuple(argv), 127, "", "python3: command not found")

    with pytest.raises(HostError, match=r"^lab01: python3 is missing on the host \(doctor needs it\)$"):
        doctor.diagnose(command_host(transport, "lab01"))


def test_a_host_that_answers_garbage_is_one_line() -> None:
    def transport(argv: list[str], timeout: float) -> CommandResult:
        return CommandResult(tuple(argv), 1, "", "Traceback ...\nSyntaxError: invalid syntax")

    with pytest.raises(HostError, match=r"^lab01: cannot read the host: SyntaxError: invalid syntax$"):
        doctor.diagnose(command_host(transport, "lab01"))


@pytest.mark.processes
def test_a_hung_host_does_not_hold_the_others_beyond_its_deadline() -> None:
    release = threading.Event()

    def hung(argv: list[str], timeout: float) -> CommandResult:
        release.wait(0.5)  # the transport's own deadline (TestinfraHost: the command's timeout + grace)
        raise HostError("hung: no answer within 0.5 s (connection hung)")

    connectors = [("hung", lambda: command_host(hung, "hung")), ("here", lambda: command_host(Here(), "here"))]
    start = time.monotonic()
    reports = doctor.diagnose_many(connectors)
    assert [r.host for r in reports] == ["hung", "here"]
    assert reports[0].error == "no answer within 0.5 s (connection hung)"
    assert reports[1].error is None and reports[1].results
    assert time.monotonic() - start < 30


def test_the_program_and_the_questions_are_each_one_shell_safe_argument_well_under_the_limit() -> None:
    from alumet_setup.targets.batched_host import BOOTSTRAP

    packed = host_answers.pack([["k", "exists", ["/"]]] * 200)
    for argument in (packed, BOOTSTRAP.split("'")[1]):
        assert not set(argument) & set("'\"$` \\\n"), argument[:80]
    assert len(BOOTSTRAP) + len(packed) < 32 * 1024  # Linux: 128 KiB for one argument


def test_a_recorded_host_answers_what_it_recorded_and_notes_the_rest() -> None:
    host = AnswerHost({key("exists", ["/"]): True, key("read_bytes", ["/secret"]): {"raises": "PermissionError"}})
    assert host.exists("/") is True
    assert host.exists("/x") is False
    with pytest.raises(PermissionError):
        host.read_text("/secret")
    assert list(host.unanswered) == [key("exists", ["/x"])]
    assert json.loads(key("run", [["a", "b"]])) == ["run", ["a", "b"]]


PROGRAM = """
import os


def who():
    return {"uid": os.geteuid(), "pid": os.getpid()}


def broken():
    return {}["missing"]


def denied():
    raise PermissionError(13, "no entry")
"""


@pytest.mark.processes
def test_a_call_runs_in_the_process_that_reads_the_host_and_its_failures_are_oserrors() -> None:
    """Host.call (doctor's perf probe as the caller): the function runs in host_answers' own process on the host,
    not a python3 of its own; whatever it raises is an OSError there, the other answers of the round go on."""
    transport = Here()
    host = command_host(transport)

    def read() -> tuple[object, bool]:
        try:  # a round that has no answer yet gets a failed call, as checks handle it
            called: object = host.call("program", PROGRAM, "who")
        except OSError as exc:
            called = exc
        return called, host.exists("/")

    answers = host.in_rounds(read)
    assert isinstance(answers[0], dict) and answers[0]["uid"] == os.geteuid() and answers[1] is True
    assert answers[0]["pid"] != os.getpid()  # the host's process, not this one
    assert len(transport.commands) == 1  # the call and the read in one command, by one python3
    with pytest.raises(OSError, match=r"program.broken: KeyError: 'missing'"):
        host.call("program", PROGRAM, "broken")
    with pytest.raises(PermissionError):
        host.call("program", PROGRAM, "denied")
    assert LocalHost().call("program", PROGRAM, "who") == {"uid": os.geteuid(), "pid": os.getpid()}


def test_a_malformed_question_gets_its_own_error_and_the_batch_its_other_answers() -> None:
    answers = host_answers.answer_all([["bad", "stat", []], ["bad run", "run", [None, 1, None]],
                                       ["ok", "exists", ["/"]]])
    assert answers["ok"] is True
    assert answers["bad"] == {"raises": "OSError", "message": "stat: IndexError: list index out of range"}
    assert answers["bad run"]["raises"] == "OSError" and answers["bad run"]["message"].startswith("run: TypeError")


def test_a_call_is_keyed_by_its_name_not_its_text_and_unanswered_it_raises() -> None:
    """A record stays valid when the program's text changes; a call a record never saw fails as a failed call."""
    host = AnswerHost({key("call", ["program", "who"]): {"called": {"uid": 0}}})
    assert host.call("program", "changed text", "who") == {"uid": 0}
    with pytest.raises(OSError, match="not answered"):
        host.call("program", PROGRAM, "broken")
    assert list(host.unanswered) == [key("call", ["program", "broken"])]


# ---- the ssh session (alumet_setup/targets/ssh.py): one program on the host for the whole run, one line per round.
# Here the session's command is a local shell instead of ssh: the same program, pipes and exit codes.


def local_session(script: str, name: str = "here") -> SshSession:
    return SshSession(name, ["sh", "-c", script])


def serving() -> str:
    """What SshSession.for_target runs on the host, run here."""
    import shlex

    from alumet_setup.targets.batched_host import BOOTSTRAP

    return f"exec {shlex.quote(sys.executable)} -I -S -c {shlex.quote(BOOTSTRAP)}"


@pytest.mark.processes
def test_a_session_serves_every_round_with_one_program_and_finds_what_doctor_finds_here(tmp_path) -> None:
    started = tmp_path / "started"
    session = local_session(f"echo >> {started}; {serving()}")
    try:
        batched = doctor.diagnose(BatchedHost(session.ask, "here"))
    finally:
        session.close()
    assert findings(batched) == findings(doctor.diagnose(LocalHost()))
    assert batched.round_trips >= 2 and started.read_text() == "\n"  # every round, one program
    with pytest.raises(HostError, match=r"^here: the connection is closed$"):
        session.ask(host_answers.pack([["k", "exists", ["/"]]]), 5)


@pytest.mark.parametrize(("script", "expected"), [
    ("exit 127", "^lab01: python3 is missing on the host \\(doctor needs it\\)$"),
    ("echo 'ssh: connect to host lab01 port 22: Connection refused' >&2; exit 255",
     "^lab01: connection refused: no ssh server listening on that port$"),
    ("echo 'Traceback ...' >&2; echo 'SyntaxError: invalid syntax' >&2; exit 1",
     "^lab01: cannot read the host: SyntaxError: invalid syntax$"),
    ("read line; echo 'not json'", "^lab01: cannot read the host: its answer is not JSON$"),
])
@pytest.mark.processes
def test_a_session_that_ends_says_why_in_one_line_and_so_does_every_later_question(script: str,
                                                                                   expected: str) -> None:
    session = local_session(script, "lab01")
    host = BatchedHost(session.ask, "lab01")
    for _ in range(2):
        with pytest.raises(HostError, match=expected):
            doctor.diagnose(host)


@pytest.mark.processes
def test_a_session_that_never_answers_is_ended_at_its_deadline(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    session = local_session(f"echo $$ > {pid_file}; exec sleep 60")
    start = time.monotonic()
    with pytest.raises(HostError, match=r"^here: no answer within 0\.5 s \(connection hung\)$"):
        session.ask(host_answers.pack([["k", "exists", ["/"]]]), 0.5)
    assert time.monotonic() - start < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed, not left behind
        os.kill(pid, 0)


@pytest.mark.processes
def test_sessions_end_with_the_run(tmp_path) -> None:
    from alumet_setup.targets.ssh import SshSessions

    with SshSessions() as sessions:
        session = sessions.keep(local_session(serving()))
        process = session._process  # started by keep(), before any question
        assert process is not None and process.poll() is None
        assert session.ask(host_answers.pack([["k", "exists", ["/"]]]), 30) == {"k": True}
    assert process.poll() == 0  # ended by its stdin's end, not killed


@pytest.mark.processes
def test_a_host_connected_early_is_read_on_that_one_connection(tmp_path, monkeypatch) -> None:
    from alumet_setup.targets.connection import connect, connect_early
    from alumet_setup.targets.ssh import SshSessions

    # An `ssh` that notes each connection and runs the remote command here.
    started, bin_dir = tmp_path / "started", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$@" >> {started}\nfor last; do :; done\nexec sh -c "$last"\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    lab, other = SshTarget("lab", "lab.example"), SshTarget("other", "other.example")
    with SshSessions() as sessions:
        connect_early([lab, "local", other], sessions, limit=1)  # doctor: before its checks are loaded
        deadline = time.monotonic() + 30  # the ssh runs on its own: it notes itself when the machine gets to it
        while not (started.exists() and started.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.read_text().count("\n") == 1 and "lab.example" in started.read_text()
        host = connect(lab, sessions)
        assert host.exists("/") and host.read_text("/proc/self/status")
    assert started.read_text().count("\n") == 1  # connect() found the session open: one connection per host


def test_an_ssh_command_line_keeps_the_destination_out_of_the_options() -> None:
    target = SshTarget("lab", "-oProxyCommand=x", user="ops", port=2222, identity_file="/k",
                       extra_args=("-o", "ProxyJump=bastion"))
    argv = target.ssh_argv("true")
    assert argv[-3:] == ["--", "-oProxyCommand=x", "true"]
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "ops"
    assert "BatchMode=yes" in argv and argv.index("ProxyJump=bastion") < argv.index("--")
