"""Property-based: whatever a user types, the command line ends in 0, 1 or 2, says a usage error in one
stderr line, never prints a traceback, never runs a template, and changes no file it was not told to write.

Nothing generated can reach a host or start a play: run_playbook and connect are replaced by stand-ins
that stop the run (exit 1 and exit 2 respectively), so the property covers everything before them.
Inventory trees run the real command line in a subprocess, bounded in time and memory (a regression
there would hang on a FIFO or read /dev/zero for ever); their hosts are 127.0.0.1 port 1 or no host at all.
Every other example runs in a forked child that is killed after PER_RUN_SECONDS (a hang fails the example
instead of hanging the suite; an alias bomb used to) with a bound on its memory.
The number of examples is bounded so that the file runs in about a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import hostile as hostile_trees
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alumet_setup.cli import main
from alumet_setup.hostside import profiles, resources
from alumet_setup.playbook import runner
from alumet_setup.playbook.settings import STEPS, load_specs
from alumet_setup.targets import connection, hosts

SPECS = load_specs(resources.bundled("roles"))
SETTING_NAMES = sorted(SPECS)
STRUCTURED = sorted(name for name, option in SPECS.items() if option.type in ("dict", "list", "raw"))
PROFILE_PARAMS = sorted({p.name for profile in profiles.PROFILES.values() for p in profile.parameters})
EXAMPLES = 40  # per test (but the inventory trees'), each example a few hundred ms at most
PER_RUN_SECONDS = 20.0  # a hang is what this catches; the CI machine is shared and slow
MEMORY_LIMIT = 2 << 30  # bytes of data per example: an alias bomb grew by about 45 MB/s


def _stop_play(*_args: object, **_kwargs: object) -> None:
    raise runner.RunnerError("stopped by the property test before any play")


def _stop_connect(target: object, *_args: object) -> None:
    raise hosts.HostError(f"{target}: stopped by the property test before any connection")


@pytest.fixture(scope="module", autouse=True)
def no_host_is_touched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_playbook", _stop_play)
        mp.setattr(connection, "connect", _stop_connect)
        mp.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
        import ansible.inventory.manager  # noqa: F401  (imported once here, not timed in the first example)
        before = _checkout_state()
        yield
    assert _checkout_state() == before  # nothing generated wrote into the checkout either


def _checkout_state() -> str:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=root, capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


# Text a user may type: printable, shell and Jinja syntax, control characters, non-ASCII.
hostile = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["{{ lookup('pipe', 'touch MARK') }}", "{% raw %}", "$(touch MARK)", "`touch MARK`", ";", "\n",
                     "\0", "-oProxyCommand=touch MARK", "..", "/dev/zero", "", " ", ",", ",,,", "é", "\x1b[31m",
                     # non-UTF-8 bytes of a command line (surrogateescape), and what tojson cannot write in TOML
                     "a\udcffb", "\udcff", "\U0001f600"]),
)
word = st.one_of(hostile, st.from_regex(r"[a-z0-9_.@:\[\]-]{1,20}", fullmatch=True))
setting = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SETTING_NAMES), st.one_of(hostile, st.sampled_from(
        ["1", "-5", "true", "maybe", "[a, b]", "{a: 1}", "/etc/x.conf", "https://example.org/a.git", "a,,b"]))),
    hostile,
)
steps = st.lists(st.one_of(st.sampled_from(STEPS), hostile), max_size=3).map(",".join)
content = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode), st.sampled_from([
    b"[lab]\nlab01 ansible_host=10.0.0.1\n", b"all:\n  hosts:\n    h1: {}\n", b'[plugins.csv]\noutput_path = "x"\n',
    b"a: &a [x, x]\nb: [*a, *a, *a]\n", b"\xff\xfe\x00",
    # what Python's parsers cannot hold: deep nesting (RecursionError), 5,000 digits (int_max_str_digits)
    b"a = " + b"{b = " * 340 + b"1" + b"}" * 340 + b"\n", b"a = " + b"[" * 520 + b"1" + b"]" * 520 + b"\n",
    b"a = " + b"9" * 5000 + b"\n", b"a: " + b"[" * 600 + b"]" * 600 + b"\n", b"a: &a [*a]\n",
]))


# YAML a dict, list or raw --set value may hold: nested flow collections, anchors and aliases (also to an
# anchor not yet closed: a loop), YAML escapes of surrogates, raw surrogates, control characters, templates.
yaml_scalar = st.one_of(st.sampled_from([
    "x", "1", "-1", "1e999", "true", "null", "~", "''", "'a b'", '"\\udcff"', '"\\ud83d"', '"a\\nb"', "*a", "*b",
    "A_B", "1: 2", "!!binary aGk=", "!!python/name:os.system", "2024-01-01", "?", "-", "&", "*", "9" * 5000,
]), hostile)
yaml_value = st.recursive(yaml_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
    st.lists(st.tuples(inner, inner), max_size=4).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
    st.tuples(st.sampled_from(["a", "b"]), inner).map(lambda anchored: f"&{anchored[0]} {anchored[1]}"),
), max_leaves=16)
# What each broke before, generated inside the container its setting expects so that it reaches the YAML
# parser: alias bombs (hashing the settings hung), loops (a ValueError), deep nesting (a RecursionError),
# 5,000 digits (int()'s ValueError), surrogates raw or escaped (ansible-playbook's YAML error).
yaml_extreme = st.one_of(
    st.integers(4, 9).map(hostile_trees.list_bomb),  # 9**n values
    st.integers(4, 9).map(hostile_trees.dict_bomb),
    st.integers(50, 700).map(lambda n: "[" * n + "]" * n),
    st.integers(50, 700).map(lambda n: "{a: " * n + "1" + "}" * n),
    st.sampled_from(["&a [*a]", "&a {b: [*a]}", "&a {b: &b [*a, *b]}", '"\\udcff"', "\udcff", "9" * 5000]),
)
_WRAP = {"dict": "{{k: {}}}", "list": "[{}]", "raw": "{}"}


def _structured(name: str) -> st.SearchStrategy[str]:
    wrap = _WRAP[SPECS[name].type]
    return st.one_of(yaml_extreme.map(wrap.format), yaml_value, yaml_extreme).map(lambda value: f"{name}={value}")


structured_setting = st.sampled_from(STRUCTURED).flatmap(_structured)


def _marks(text: str, mark: Path) -> str:
    return text.replace("MARK", str(mark))


def _main_in_child(args: list[str], pipe: int) -> None:
    """The forked child: main(args) with a bound on memory; [exit code, stdout, stderr] as JSON on `pipe`.
    An exception that escapes main is written out as the traceback it would have printed."""
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what escapes main is the defect this test reports
            traceback.print_exc()
            code = 70
    with os.fdopen(pipe, "wb") as handle:
        handle.write(json.dumps([code, out.getvalue(), err.getvalue()]).encode())


def _run_forked(args: list[str]) -> tuple[int, str, str]:
    """main(args) in a forked child (the stand-ins installed here are its too), killed after PER_RUN_SECONDS."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _main_in_child(args, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + PER_RUN_SECONDS
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"no answer within {PER_RUN_SECONDS} s (a hang): {args!a}")
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert chunks, f"the child died without a word (memory beyond {MEMORY_LIMIT} bytes?): {args!a}"
    code, out, err = json.loads(b"".join(chunks))
    return code, out, err


def run_cli(args: list[str], work: Path) -> tuple[int, str, str]:
    """main(args), forked: exit code, stdout, stderr; with the invariants that hold for any input."""
    before = {p: p.stat().st_mtime_ns for p in work.iterdir()}
    code, stdout, stderr = _run_forked(args)
    out = io.StringIO(stdout)
    assert code in (0, 1, 2), (args, code, stderr)
    assert "Traceback" not in stderr and "Traceback" not in out.getvalue(), (args, stderr)
    if code == 2:
        lines = stderr.splitlines()
        assert lines and all(line.startswith("alumet-setup: error: ") for line in lines), (args, stderr)
        assert len(lines) == 1 or args[0] == "doctor", (args, stderr)  # doctor: one line per unreachable host
    assert not (work / "MARK").exists() and not list(work.glob("*touch*")), args  # no template, no shell ran
    for path, mtime in before.items():  # inputs are read, never written
        assert path.exists() and path.stat().st_mtime_ns == mtime, (args, path)
    return code, out.getvalue(), stderr


def _file(work: Path, name: str, data: bytes) -> str:
    path = work / name
    path.write_bytes(data)
    return str(path)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["install", "uninstall"]), host_list=st.lists(word, max_size=2),
       sets=st.lists(setting, max_size=3), only=st.one_of(st.none(), steps), skip=st.one_of(st.none(), steps),
       inventory=st.one_of(st.none(), content), user=st.one_of(st.none(), word))
def test_install_and_uninstall(work: Path, command: str, host_list: list[str], sets: list[str], only: str | None,
                               skip: str | None, inventory: bytes | None, user: str | None) -> None:
    mark = work / "MARK"
    args = [command, "--check"]
    for host in host_list:
        args += ["--host", _marks(host, mark)]
    for value in sets:
        args += ["--set", _marks(value, mark)]
    if only is not None:
        args += ["--only", only]
    if skip is not None:
        args += ["--skip", skip]
    if user is not None:
        args += ["--user", _marks(user, mark)]
    if inventory is not None:
        args += ["-i", _file(work, "inventory", inventory)]
    code, _out, _err = run_cli(args, work)
    assert code in (1, 2)  # 1: everything validated, and the stand-in stopped the play


@settings(max_examples=2 * EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["install", "uninstall"]), sets=st.lists(structured_setting, min_size=1, max_size=2))
def test_dict_and_list_settings(work: Path, command: str, sets: list[str]) -> None:
    """Nested values, aliases (bombs and loops), deep nesting, non-UTF-8: refused in one line or accepted,
    never a hang, a traceback or a template run."""
    args = [command, "--check", "--host", "lab01"]
    for value in sets:
        args += ["--set", _marks(value, work / "MARK")]
    code, _out, _err = run_cli(args, work)
    assert code in (1, 2)  # 1: everything validated, and the stand-in stopped the play


# testinfra URL forms, well and badly formed: doctor checks them before anything is contacted.
SCHEMES = ["ssh", "podman", "docker", "ansible", "local", "paramiko", "winrm", "salt", "foo", ""]
url = st.builds(lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(SCHEMES),
                st.one_of(word, st.sampled_from(["[::1", "[::1]:22", "x:abc", "-oProxyCommand=touch MARK",
                                                 "--privileged", "root@h:22", "h?sudo=true"])))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.one_of(word, url), config=st.one_of(st.none(), content), plugins=st.one_of(st.none(), hostile),
       checks=st.one_of(st.none(), hostile))
def test_doctor(work: Path, host: str, config: bytes | None, plugins: str | None, checks: str | None) -> None:
    args = ["doctor", "--host", _marks(host, work / "MARK")]
    if config is not None:
        args += ["--config", _file(work, "config.toml", config)]
    if plugins is not None:
        args += ["--plugin", plugins]
    if checks is not None:
        args += ["--only-check", checks]
    code, _out, _err = run_cli(args, work)
    assert code == 2  # bad input, or the stand-in connection: never a report of this machine


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profile=st.one_of(st.sampled_from(sorted(profiles.PROFILES)), hostile),
       sets=st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(PROFILE_PARAMS), hostile), hostile),
                     max_size=3),
       existing=st.booleans(), force=st.booleans())
def test_config_render(work: Path, profile: str, sets: list[str], existing: bool, force: bool) -> None:
    out_dir = work.with_name(work.name + "-out")  # the one place this command may write
    out_dir.mkdir(exist_ok=True)
    target = out_dir / "alumet-config.toml"
    if existing:
        target.write_text("mine\n")
    else:
        target.unlink(missing_ok=True)
    args = ["config", "render", "--profile", profile, "-o", str(target)]
    for value in sets:
        args += ["--set", value]
    if force:
        args.append("--force")
    code, _out, _err = run_cli(args, work)
    if code == 0:
        assert not existing or force
    elif existing:
        assert target.read_text() == "mine\n"
    assert sorted(os.listdir(out_dir)) == (["alumet-config.toml"] if code == 0 or existing else [])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=content)
def test_config_validate(work: Path, data: bytes) -> None:
    run_cli(["config", "validate", _file(work, "validate.toml", data)], work)


# Inventory trees: where a file may sit (relative to a directory inventory; with -i its hosts.ini, only
# group_vars/ and host_vars/ are read) and what it may be: hostile.KINDS, a directory link leading to an
# alias bomb or back up the tree, or harmless.
PLACES = ["more", "group_vars/all", "group_vars/all.yml", "group_vars/lab/x.yml", "host_vars/h1", "sub/deeper/x",
          ".hidden", "sub/.hidden/x", "group_vars/.x.yml"]
TREE_KINDS = [*hostile_trees.KINDS, "link-to-bomb", "loop", "vars", "link-to-vars"]
HARMLESS = ("vars", "link-to-vars")
TREE_EXAMPLES = 25  # each a subprocess: a regression that hangs or eats memory is cut there, not here


def _plant_tree(root: Path, entries: dict[str, str]) -> None:
    inventory = root / "inv"
    inventory.mkdir()
    (inventory / "hosts.ini").write_text(hostile_trees.GOOD_INI)
    (root / "bombs").mkdir()
    (root / "bombs" / "x.yml").write_text(hostile_trees.BOMB_VARS)
    (root / "vars").mkdir()
    (root / "vars" / "x.yml").write_text("ansible_user: ops\n")
    for place, kind in entries.items():
        path = inventory / place
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind in hostile_trees.KINDS:
            hostile_trees.plant(path, kind)
        elif kind == "vars":
            path.write_text("ansible_user: ops\n")
        else:
            path.symlink_to({"link-to-bomb": root / "bombs", "loop": inventory, "link-to-vars": root / "vars"}[kind])


@pytest.mark.processes
@settings(max_examples=TREE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.sampled_from(PLACES), st.sampled_from(TREE_KINDS), min_size=1, max_size=4),
       as_file=st.booleans(), command=st.sampled_from([["doctor"], ["install", "--check", "--host", "nope"]]))
def test_inventory_trees(entries: dict[str, str], as_file: bool, command: list[str]) -> None:
    """Whatever an inventory directory holds, where Ansible would read it: exit 2, one line, no traceback,
    never a hang (a FIFO), never memory without bound (/dev/zero), never an expanded alias bomb."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _plant_tree(root, entries)
        inventory = root / "inv" / "hosts.ini" if as_file else root / "inv"
        read = [place for place in entries
                if not any(part.startswith(".") for part in place.split("/"))
                and (not as_file or place.startswith(("group_vars/", "host_vars/")))]
        hostile = [place for place in read if entries[place] not in HARMLESS]
        start = time.monotonic()
        run = hostile_trees.cli(*command, "-i", str(inventory))
        took = time.monotonic() - start
    lines = run.stderr.splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr, (entries, as_file, run.stderr[-2000:])
    assert lines and all(line.startswith("alumet-setup: error: ") for line in lines), (entries, run.stderr)
    assert took < PER_RUN_SECONDS, (entries, took)
    if hostile:
        assert len(lines) == 1 and lines[0].startswith(f"alumet-setup: error: --inventory {root}/inv/"), (
            entries, as_file, run.stderr)
    else:  # a good tree: the stand-in targets (127.0.0.1:1, or no host "nope") end it
        assert "--inventory" not in run.stderr or "is not a host or group" in run.stderr, (entries, run.stderr)
