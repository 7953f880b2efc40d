"""Host specs -> targets -> inventory: strict validation before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from alumet_setup.inventory import InventoryError, Target, build_inventory, parse_host, resolve_targets


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
