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


def test_links_the_host_has_survive_install_and_uninstall(bed: dict[str, str], tmp_path: Path) -> None:
    """/etc/fstab a relative link to fstab.d/real and the sysctl file a link (as Debian's 99-sysctl.conf):
    the edits go to the targets, whose mode and owner stay, and both links are still there after install
    and after uninstall, with the targets' content back. A link where a role would write its own file (the
    udev rule) is refused, and uninstall leaves it."""
    with container() as c:
        c.sh("mkdir -p /etc/fstab.d && printf '# the host fstab\\nproc /proc proc defaults,hidepid=2 0 0\\n' "
             "> /etc/fstab.d/real && chmod 0640 /etc/fstab.d/real && rm -f /etc/fstab "
             "&& ln -s fstab.d/real /etc/fstab && mkdir -p /etc/sysctl.d "
             "&& printf '# the host sysctl.conf\\nvm.swappiness = 10\\n' > /etc/sysctl.conf "
             "&& ln -sf ../sysctl.conf /etc/sysctl.d/99-sysctl.conf")
        state = ("readlink /etc/fstab /etc/sysctl.d/99-sysctl.conf; stat -c '%n %a %U:%G %F' /etc/fstab.d/real "
                 "/etc/sysctl.conf; ls -A /etc/fstab.d")
        before = c.sh(state).stdout
        fstab, sysctl = c.sh("cat /etc/fstab.d/real").stdout, c.sh("cat /etc/sysctl.conf").stdout
        settings = {"perf_paranoid_sysctl_file": "/etc/sysctl.d/99-sysctl.conf"}
        run = c.play(tmp_path, ["alumet_group", "hidepid", "alumet_sysctl"], settings)
        assert run.returncode == 0, run.stdout[-3000:]
        assert c.sh(state).stdout == before  # links kept, targets' mode and owner kept, no stray file
        gid = c.sh("getent group alumet | cut -d: -f3").stdout.strip()
        assert f"hidepid=2,gid={gid}" in c.sh("cat /etc/fstab.d/real").stdout
        assert "kernel.perf_event_paranoid = 2" in c.sh("cat /etc/sysctl.conf").stdout
        undo = c.play(tmp_path, ["alumet_sysctl", "hidepid", "alumet_group"], settings, tasks_from="uninstall")
        assert undo.returncode == 0, undo.stdout[-3000:]
        assert c.sh(state).stdout == before
        assert c.sh("cat /etc/fstab.d/real").stdout == fstab and c.sh("cat /etc/sysctl.conf").stdout == sysctl
        assert c.sh("test ! -e /etc/fstab.alumet-setup.bak", check=False).returncode == 0

        c.sh("mkdir -p /etc/udev/rules.d && ln -s /dev/null /etc/udev/rules.d/70-alumet-powercap.rules")
        run = c.play(tmp_path, ["alumet_group", "powercap"], {"powercap_sysfs_root": FAKE})
        assert run.returncode != 0
        assert ("powercap: /etc/udev/rules.d/70-alumet-powercap.rules is a symlink to /dev/null: refusing to write "
                "over it") in " ".join(run.stdout.split()), run.stdout[-3000:]
        undo = c.play(tmp_path, ["powercap"], {"powercap_sysfs_root": FAKE}, tasks_from="uninstall")
        assert undo.returncode == 0, undo.stdout[-3000:]
        assert c.sh("readlink /etc/udev/rules.d/70-alumet-powercap.rules").stdout.strip() == "/dev/null"
