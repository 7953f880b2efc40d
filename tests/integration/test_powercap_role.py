"""The powercap role for real: ansible-playbook on this machine (local connection) against a fake powercap
tree, its rule and records under tmp_path, `udevadm` a stub that only notes its calls (this machine's udev
is never asked to reload or trigger). Uninstall gives each energy_uj counter back exactly the mode and
owner it had before install, and a rules directory the host has keeps its mode and owner and stays."""

from __future__ import annotations

import grp
import json
import os
from pathlib import Path

import pytest
from test_config_role import play

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role chowns files and writes root-owned ones")

GROUP = "daemon"  # a group every Debian and Ubuntu has: the play creates none on this machine


def owner_and_mode(path: Path) -> tuple[int, int, str]:
    st = path.stat()
    return st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)


@pytest.mark.parametrize("rules_dir", ["the host's", "absent"])
def test_counters_and_the_rules_directory_get_back_exactly_what_the_host_had(tmp_path: Path, rules_dir: str) -> None:
    sysfs = tmp_path / "powercap"
    counters = [sysfs / "intel-rapl" / "intel-rapl:0" / "energy_uj",
                sysfs / "intel-rapl" / "intel-rapl:0" / "intel-rapl:0:0" / "energy_uj"]
    for counter, (uid, gid, mode) in zip(counters, [(65534, 65534, 0o604), (0, 0, 0o400)], strict=True):
        counter.parent.mkdir(parents=True, exist_ok=True)
        counter.write_text("123\n")
        os.chown(counter, uid, gid)
        os.chmod(counter, mode)
    rules = tmp_path / "rules.d"
    if rules_dir == "the host's":  # shared, as /tmp
        rules.mkdir()
        os.chown(rules, 65534, 65534)
        os.chmod(rules, 0o1777)
    host = {path: owner_and_mode(path) for path in [*counters, rules] if path.exists()}
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "udevadm").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/udevadm.calls\n")
    (stub / "udevadm").chmod(0o755)
    previous = tmp_path / "state" / "powercap-previous.json"
    settings = {"powercap_sysfs_root": str(sysfs), "powercap_rule_file": str(rules / "70-alumet-powercap.rules"),
                "powercap_group": GROUP, "powercap_previous_file": str(previous)}
    env = {"PATH": f"{stub}:{os.environ['PATH']}"}

    for _ in range(2):  # the second run must not record the mode and group the first one gave
        run = play(tmp_path, settings, role="powercap", env=env)
        assert run.returncode == 0, run.stdout[-3000:]
        gid = grp.getgrnam(GROUP).gr_gid
        assert [owner_and_mode(c)[1:] for c in counters] == [(gid, "0o644"), (gid, "0o440")]
        assert owner_and_mode(rules) == host.get(rules, (0, 0, "0o755"))
    assert json.loads(previous.read_text())["counters"] == {
        str(counters[0]): {"mode": "0604", "uid": 65534, "gid": 65534},
        str(counters[1]): {"mode": "0400", "uid": 0, "gid": 0}}

    undo = play(tmp_path, settings, role="powercap", tasks_from="uninstall", env=env)
    assert undo.returncode == 0, undo.stdout[-3000:]
    assert {path: owner_and_mode(path) for path in [*counters, rules] if path.exists()} == host  # made: removed
    assert not previous.exists() and not (rules / "70-alumet-powercap.rules").exists()
