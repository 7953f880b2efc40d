"""Security defaults, checked on bed containers with the real roles.

The agent's binary and directories are checked after a full converge by molecule/check (tests/test_secure.py);
the become password by tests/unit/test_cli_install.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bedhost import bed_vars, container

pytestmark = [pytest.mark.containers]

FAKE = "/tmp/fake-powercap"  # containers see /sys read-only: the role reads powercap_sysfs_root
ZONES = [f"{FAKE}/intel-rapl/intel-rapl:0", f"{FAKE}/intel-rapl/intel-rapl:0/intel-rapl:0:0"]


def test_energy_counters_readable_by_the_group_only_then_locked_again(bed: dict[str, str], tmp_path: Path) -> None:
    with container() as c:
        c.sh(" && ".join(f"mkdir -p {z} && echo 123 > {z}/energy_uj && chmod 0400 {z}/energy_uj" for z in ZONES))
        run = c.play(tmp_path, ["alumet_group", "powercap"], {"powercap_sysfs_root": FAKE})
        assert run.returncode == 0, run.stdout[-3000:]
        for zone in ZONES:
            assert c.sh(f"stat -c '%a %U:%G' {zone}/energy_uj").stdout.split() == ["440", "root:alumet"]
        rule = c.sh("cat /etc/udev/rules.d/70-alumet-powercap.rules").stdout
        assert 'RUN+="/bin/chgrp alumet /sys%p/energy_uj"' in rule
        assert 'RUN+="/bin/chmod g+r /sys%p/energy_uj"' in rule and "o+r" not in rule

        run = c.play(tmp_path, ["powercap", "alumet_group"], {"powercap_sysfs_root": FAKE}, tasks_from="uninstall")
        assert run.returncode == 0, run.stdout[-3000:]
        for zone in ZONES:
            assert c.sh(f"stat -c '%a %U:%G' {zone}/energy_uj").stdout.split() == ["400", "root:root"]
        assert c.sh("test -e /etc/udev/rules.d/70-alumet-powercap.rules || getent group alumet",
                    check=False).returncode != 0


@pytest.mark.parametrize(("settings", "refused"), [
    ({"rustup_update_root": "http://mirror.example/rustup"}, "http://mirror.example/rustup"),
    ({"rustup_dist_server": "http://192.0.2.1:8080"}, "http://192.0.2.1:8080"),
    ({"rustup_update_root": "http://mirror.example/rustup", "rustup_allow_insecure_mirror": True}, None),
])
def test_downloads_over_https_unless_a_mirror_is_allowed(bed: dict[str, str], tmp_path: Path,
                                                         settings: dict[str, object], refused: str | None) -> None:
    with container() as c:
        run = c.play(tmp_path, ["rustup"], {**bed_vars(bed), **settings}, tasks_from="preflight")
        if refused is None:
            assert run.returncode == 0, run.stdout[-3000:]
        else:
            assert run.returncode != 0
            assert f"rustup: refusing to download Rust from {refused}: downloads must use https://" in run.stdout
