"""Host specs -> targets -> inventory: strict validation before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import hostile as hostile_trees
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alumet_setup.playbook.inventory import (
    InventoryError,
    Target,
    build_inventory,
    expand_hosts,
    parse_host,
    resolve_targets,
    ssh_targets,
)


@pytest.mark.parametrize(("spec", "address", "user", "port", "name"), [
    ("lab01", "lab01", None, None, "lab01"),
    ("lab01.example.org", "lab01.example.org", None, None, "lab01.example.org"),
    ("root@127.0.0.1:2222", "127.0.0.1", "root", 2222, "127.0.0.1_2222"),
    ("ops@[::1]:22", "::1", "ops", 22, "__1_22"),
    ("fe80::1", "fe80::1", None, None, "fe80__1"),
    ("deploy.user@h:65535", "h", "deploy.user", 65535, "h_65535"),
])
def test_valid_specs(spec: str, address: str, user: str | None, port: int | None, name: str) -> None:
    assert parse_host(spec) == Target(name=name, spec=spec, address=address, user=user, port=port)


@pytest.mark.parametrize(("spec", "why"), [
    ("lab01;rm -rf /", "';' not allowed"),
    ("-oProxyCommand=x", "cannot start with '-'"),
    ("a b", "' ' not allowed"),
    ("", "empty host"),
    ("h:0", "port must be a number from 1 to 65535"),
    ("h:70000", "port must be a number from 1 to 65535"),
    ("h:ssh", "port must be a number"),
    ("999.1.1.1", "not a valid IPv4 address"),
    ("[zz]:22", "not a valid IPv6 address"),
    ("a..b", "not a valid host name"),
    ("x$(id)", "not allowed"),
    ("@h", "not a valid user name"),
    ("-u@h", "cannot start with '-'"),
    ("1u@h", "not a valid user name"),
    ("u@", "host part is empty"),
    ("a\nb", "'\\n' not allowed"),
])
def test_invalid_specs_give_one_line(spec: str, why: str) -> None:
    with pytest.raises(InventoryError) as caught:
        parse_host(spec)
    message = str(caught.value)
    assert why in message and "\n" not in message


def test_local_names_mean_this_machine() -> None:
    assert parse_host("localhost").local and parse_host("local").local
    assert resolve_targets([])[0].local


@pytest.mark.parametrize(("name", "text"), [
    ("hosts.ini", "[lab]\nlab01 ansible_host=10.0.0.1\nweb[01:02].example.org\n"),
    ("hosts.yml", "all:\n  children:\n    lab:\n      hosts:\n        lab01: {ansible_host: 10.0.0.1}\n"
                  "        web01.example.org: {}\n"),
])
def test_inventory_names(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    targets = resolve_targets(["lab01", "lab"], str(path))
    assert [t.name for t in targets] == ["lab01", "lab"] and all(t.from_inventory for t in targets)
    assert [t.name for t in resolve_targets([], str(path))] == ["all"]
    with pytest.raises(InventoryError, match=r"'nope' is not a host or group of .*known: lab, lab01"):
        resolve_targets(["nope"], str(path))
    assert targets[0].doctor_host() == "lab01"  # doctor -i reaches it with the inventory's variables


def test_inventory_problems(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such file"):
        resolve_targets([], str(tmp_path / "missing.ini"))
    broken = tmp_path / "broken.yml"
    broken.write_text("this is: [not valid\n")
    with pytest.raises(InventoryError, match="no hosts found"):
        resolve_targets([], str(broken))


def test_duplicate_addresses_get_distinct_names() -> None:
    assert [t.name for t in resolve_targets(["a@h", "b@h"])] == ["h", "h_2"]


def test_a_numbered_name_never_takes_another_hosts_own_name() -> None:
    """Before: labuser@X:2400 was named X_2400_2, the third host's own name, so the generated inventory held
    two hosts (one never ran) and the summary showed X_2400_2 twice."""
    targets = resolve_targets(["root@X:2400", "labuser@X:2400", "X_2400_2"])
    assert [(t.name, t.user, t.address, t.port) for t in targets] == [
        ("X_2400", "root", "X", 2400), ("X_2400_3", "labuser", "X", 2400), ("X_2400_2", None, "X_2400_2", None)]
    hosts = build_inventory(targets, user="ops", is_root=True)["all"]["hosts"]
    assert {name: (v["ansible_host"], v.get("ansible_port"), v["ansible_user"]) for name, v in hosts.items()} == {
        "X_2400": ("X", 2400, "root"), "X_2400_3": ("X", 2400, "labuser"), "X_2400_2": ("X_2400_2", None, "ops")}


def test_one_login_given_twice_runs_once() -> None:
    targets = resolve_targets(["h", "a@h", "h", "local", "localhost", "a@h"])
    assert [(t.name, t.user, t.local) for t in targets] == [("h", None, False), ("h_2", "a", False),
                                                            ("localhost", None, True)]


_USERS = st.sampled_from([None, "root", "ops", "a"])
_HOSTS = st.sampled_from(["X", "x", "X_2400", "X_2400_2", "X_2400_3", "X_2", "::1", "__1", "__1_22", "h", "h_2",
                          "127.0.0.1", "127.0.0.1_22", "localhost", "local", "a.b", "a_b"])


@st.composite
def _spec(draw: st.DrawFn) -> str:
    host, user, port = draw(_HOSTS), draw(_USERS), draw(st.sampled_from([None, 22, 2400]))
    if host in ("localhost", "local"):
        return host
    where = f"[{host}]" if ":" in host and port else host
    return (f"{user}@" if user else "") + where + (f":{port}" if port else "")


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(_spec(), max_size=8))
def test_every_host_given_runs_under_a_name_of_its_own(specs: list[str]) -> None:
    targets = resolve_targets(specs)
    names = [t.name for t in targets]
    assert len(names) == len(set(names)), specs
    logins = {(t.address, t.user, t.port, t.local) for t in (parse_host(s) for s in specs)} if specs else {
        (None, None, None, True)}
    assert {(t.address, t.user, t.port, t.local) for t in targets} == logins and len(targets) == len(logins), specs
    assert list(build_inventory(targets, user="root", is_root=True)["all"]["hosts"]) == names  # none overwritten


def test_generated_inventory() -> None:
    targets = resolve_targets(["root@127.0.0.1:2222", "lab01", "localhost"])
    hosts = build_inventory(targets, user="ops", is_root=True)["all"]["hosts"]
    assert hosts["127.0.0.1_2222"] == {"ansible_host": "127.0.0.1", "ansible_connection": "ssh",
                                       "ansible_port": 2222, "ansible_user": "root", "ansible_become": False}
    assert hosts["lab01"] == {"ansible_host": "lab01", "ansible_connection": "ssh", "ansible_user": "ops"}
    assert hosts["localhost"]["ansible_connection"] == "local"
    assert hosts["localhost"]["ansible_become"] is False  # root: nothing to become (and maybe no sudo)
    local = build_inventory(resolve_targets([]), is_root=False)["all"]["hosts"]["localhost"]
    assert local["ansible_become"] is True and local["ansible_become_method"] == "sudo"


BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
               for p, n in zip([None, *"abcdefgh"], "abcdefghi", strict=True)) + "all:\n  hosts:\n    h1: {bomb: *i}\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alumet_setup", *args], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [["doctor"], ["install", "--check"]])
@pytest.mark.parametrize(("content", "expected"), [
    (BOMB, "its YAML aliases expand to more than 500000 values (an alias bomb?): not loaded"),
    (b"\x7fELF\x02\x01\x01\0\0\0", "not a text file (NUL byte at offset 7)"),
    (b"[lab]\nh\xe9\n", "not UTF-8 text (byte 0xe9 at offset 7)"),
    ("/dev/zero", "a character device, not an inventory file"),
    ("fifo", "a FIFO, not an inventory file"),
    (b"#" * (1 << 20) + b"\n", "too large (1048577 bytes; at most 1048576)"),
])
@pytest.mark.processes
def test_hostile_inventories_are_refused_in_one_line(tmp_path: Path, command: list[str], content: str | bytes,
                                                     expected: str) -> None:
    if content == "/dev/zero":
        path = "/dev/zero"
    elif content == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    else:
        path = str(tmp_path / "hosts.yml")
        Path(path).write_bytes(content if isinstance(content, bytes) else content.encode())
    run = _cli(*command, "-i", path)  # the alias bomb took minutes and more than 1.2 GB before
    assert run.returncode == 2 and run.stdout == "", (run.stdout[-500:], run.stderr[-2000:])
    assert run.stderr == f"alumet-setup: error: --inventory {path}: {expected}\n"


def test_a_directory_inventory_is_checked_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "a.ini").write_text("[lab]\nlab01\n")
    (tmp_path / "b.yml").write_text(BOMB)
    with pytest.raises(InventoryError, match=r"b\.yml: its YAML aliases expand"):
        resolve_targets([], str(tmp_path))
    (tmp_path / "b.yml").unlink()
    assert [t.name for t in resolve_targets(["lab01"], str(tmp_path))] == ["lab01"]


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  vars: &common {ansible_user: ops}\n  children:\n    lab:\n      hosts:\n"
                    "        lab01: *common\n        lab02: *common\n")
    assert [t.name for t in resolve_targets([], str(path))] == ["all"]
    assert expand_hosts(str(path), ["lab"]) == ["lab01", "lab02"]


def test_group_vars_beside_an_inventory_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text("[lab]\nlab01\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "lab.yml").write_text(BOMB.replace("all:\n  hosts:\n    h1: {bomb: *i}\n", "x: *i\n"))
    with pytest.raises(InventoryError, match=r"group_vars/lab\.yml: its YAML aliases expand"):
        resolve_targets([], str(tmp_path / "hosts.ini"))


# Where a hostile file sits in an inventory layout: (the -i argument, the file Ansible would read there).
LAYOUTS = {
    "a file of a directory inventory": ("inv", "inv/more"),
    "group_vars/all beside an inventory file": ("hosts.ini", "group_vars/all"),
    "group_vars/all.yml of a directory inventory": ("inv", "inv/group_vars/all.yml"),
    "host_vars/h1 beside an inventory file": ("hosts.ini", "host_vars/h1"),
    "a subdirectory of group_vars/all/": ("hosts.ini", "group_vars/all/deep/x.yml"),
    "a symlinked subdirectory of a directory inventory": ("inv", "inv/linked/x.yml"),
}


def _layout(tmp_path: Path, layout: str, kind: str) -> tuple[str, str]:
    """The layout with a good inventory in it and `kind` where LAYOUTS says; (-i argument, hostile path)."""
    inventory, hostile = LAYOUTS[layout]
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.ini").write_text(hostile_trees.GOOD_INI)
    (tmp_path / "hosts.ini").write_text(hostile_trees.GOOD_INI)
    if layout == "a symlinked subdirectory of a directory inventory":
        hostile_trees.plant(tmp_path / "elsewhere" / "x.yml", kind)  # the same file given directly is refused
        (tmp_path / "inv" / "linked").symlink_to(tmp_path / "elsewhere")
    else:
        hostile_trees.plant(tmp_path / hostile, kind)
    return str(tmp_path / inventory), str(tmp_path / hostile)


@pytest.mark.processes
@pytest.mark.parametrize("kind", sorted(hostile_trees.KINDS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_file_ansible_would_read_is_checked_first(tmp_path: Path, layout: str, kind: str) -> None:
    """A FIFO there hung doctor for ever, /dev/zero grew its memory by 1 GB every 5 s, an alias bomb behind
    a symlinked directory passed: only the -i file itself was checked, and only regular files under it."""
    inventory, hostile = _layout(tmp_path, layout, kind)
    start = time.monotonic()
    run = hostile_trees.cli("doctor", "-i", inventory)
    took = time.monotonic() - start
    assert run.returncode == 2 and run.stdout == "", (run.stdout[-500:], run.stderr[-2000:])
    assert run.stderr.startswith(f"alumet-setup: error: --inventory {hostile}: ") and run.stderr.count("\n") == 1
    assert hostile_trees.KINDS[kind] in run.stderr, run.stderr
    assert took < 10, took  # a second of work at most; the rest is a shared machine's Python start-up


@pytest.mark.processes
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_install_checks_them_before_anything_runs(tmp_path: Path, layout: str) -> None:
    inventory, hostile = _layout(tmp_path, layout, "fifo")
    run = hostile_trees.cli("install", "--check", "-i", inventory)
    assert run.returncode == 2 and run.stdout == "", (run.stdout[-500:], run.stderr[-2000:])
    assert run.stderr == f"alumet-setup: error: --inventory {hostile}: a FIFO, not a regular file\n"


@pytest.mark.processes
def test_a_directory_that_links_back_to_itself_is_refused(tmp_path: Path) -> None:
    """Ansible follows such links: two of them made it parse the inventory 2^40 times."""
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.ini").write_text(hostile_trees.GOOD_INI)
    for name in ("a", "b"):
        (tmp_path / "inv" / name).symlink_to(tmp_path / "inv")
    run = hostile_trees.cli("doctor", "-i", str(tmp_path / "inv"))
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr == (f"alumet-setup: error: --inventory {tmp_path}/inv/a: a link back to a directory that "
                          "contains it (a loop)\n")


def test_links_to_good_files_and_directories_are_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "lab.ini").write_text("[lab]\nlab01\n")
    (tmp_path / "vars.yml").write_text("ansible_user: ops\n")
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "inv" / "group_vars").mkdir()
    (tmp_path / "inv" / "group_vars" / "lab.yml").symlink_to(tmp_path / "vars.yml")
    (tmp_path / "inv" / ".hidden-fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "inv" / ".hidden-fifo")  # hidden: Ansible never reads it, nor do we
    assert [t.name for t in resolve_targets(["lab01"], str(tmp_path / "inv"))] == ["lab01"]
    assert ssh_targets(str(tmp_path / "inv"), ["lab01"])[0].user == "ops"  # type: ignore[union-attr]


@pytest.mark.processes
def test_a_template_error_in_a_connection_variable_is_one_line(tmp_path: Path) -> None:
    """Before: the template error's traceback (exit 1); a lookup that does not exist, or whose plugin
    directory is no longer read (test_ansible_config.py), ends there."""
    path = tmp_path / "hosts.ini"
    path.write_text("h1 ansible_host=\"{{ lookup('no_such_lookup') }}\"\n")
    run = hostile_trees.cli("doctor", "-i", str(path))
    assert run.returncode == 2 and run.stdout == "", run.stderr[-2000:]
    assert run.stderr.startswith(f"alumet-setup: error: --inventory {path}: h1: ansible_host: ")
    assert run.stderr.count("\n") == 1 and "no_such_lookup" in run.stderr
