"""Remote-host pieces that need no container: ssh's reasons in one line, unreachable reports, SshTarget."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from alumet_setup import doctor
from alumet_setup.playbook.inventory import InventoryError
from alumet_setup.targets.hosts import HostError
from alumet_setup.targets.ssh import SshTarget, ssh_failure

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "doctor-schema.json").read_text())
BANNER = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Host key for [127.0.0.1]:2201 has changed and you have requested strict checking.
Host key verification failed."""


@pytest.mark.parametrize(("stderr", "expected"), [
    (BANNER, "host key verification failed: "),
    ("root@127.0.0.1: Permission denied (publickey,password).", "authentication failed (Permission denied "
                                                                "(publickey,password))"),
    ("ssh: connect to host 127.0.0.1 port 9: Connection refused", "connection refused"),
    ("ssh: Could not resolve hostname nope.invalid: Name or service not known", "could not resolve host name "
                                                                                "nope.invalid"),
    ("something else\nlast words\n", "last words"),
])
def test_ssh_failure_is_one_line(stderr: str, expected: str) -> None:
    line = ssh_failure(stderr)
    assert line.startswith(expected) and "\n" not in line and "@" not in line.replace("root@", "")


def test_unreachable_host_fits_the_schema_and_the_table() -> None:
    ok = doctor.Report("a", [], [doctor.PluginVerdict("csv", doctor.Readiness.READY)], 0.1)
    gone = doctor.Report.unreachable("b", "connection refused")
    document = json.loads(doctor.to_json([ok, gone]))
    jsonschema.validate(document, SCHEMA)
    assert "error" not in document["hosts"][0]
    assert document["hosts"][1] | {"seconds": 0} == {
        "host": "b", "ready": False, "summary": "unreachable: connection refused", "seconds": 0,
        "checks": [], "plugins": {}, "error": "connection refused", "round_trips": 0}
    rows = [line.split()[:2] for line in doctor.render_table([ok, gone]).splitlines()]
    assert rows == [["host", "ready"], ["a", "yes"], ["b", "unreachable"]]


def test_diagnose_many_keeps_order_and_isolates_a_failing_connect() -> None:
    def refuse() -> None:
        raise HostError("b: connection refused")

    from alumet_setup.targets.hosts import LocalHost
    reports = doctor.diagnose_many([("b", refuse), ("a", LocalHost)], only=["system.os"])
    assert [r.host for r in reports] == ["b", "a"]
    assert reports[0].error == "connection refused" and reports[1].error is None and reports[1].results


def test_ssh_targets_from_specs_and_quoted_arguments() -> None:
    from alumet_setup.playbook.inventory import resolve_hosts

    def reach(spec: str) -> object:
        [(_, target)] = resolve_hosts([spec], doctor=True).reached
        return target

    assert reach("podman://c1") == "podman://c1"
    assert reach("bob@lab01:2222") == SshTarget("bob@lab01:2222", "lab01", "bob", 2222)
    assert reach("localhost") is None and reach("local") is None
    assert SshTarget("x", "::1", port=22).ssh_argv("true")[-5:] == ["-p", "22", "--", "::1", "true"]
    with pytest.raises(InventoryError, match="not allowed"):
        reach("lab01;reboot")
    argv = SshTarget("x", "h", extra_args=("-o", "ProxyCommand=nc %h %p; echo")).ssh_argv("true")
    assert "ProxyCommand=nc %h %p; echo" in argv and "BatchMode=yes" in argv  # each its own argument, no shell


def test_an_inventory_host_on_the_podman_connection_is_reached_with_podman_exec(tmp_path: Path) -> None:
    """doctor -i and install's survey: testinfra's podman backend, not one Ansible run per command."""
    from alumet_setup.playbook.inventory import ssh_targets

    inventory = tmp_path / "hosts.ini"
    inventory.write_text("c1 ansible_connection=containers.podman.podman\nc2 ansible_connection=podman "
                         "ansible_host=box\nc3 ansible_connection=community.docker.docker\n")
    assert ssh_targets(str(inventory), ["c1", "c2", "c3"]) == [
        "podman://c1", "podman://box", f"ansible://c3?ansible_inventory={inventory}"]
