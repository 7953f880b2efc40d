"""kernel.perf_event_paranoid: systemd-sysctl precedence on fixture trees (tests/fixtures/sysctl)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from checkhelpers import FIXTURES, FixtureHost, caps_finding, context, copy_fixture, stub

from alumet_setup.doctor.checks import agent, sysctl, system  # noqa: F401  (registers the checks)
from alumet_setup.doctor.checks.sysctl import boot_setters, judge
from alumet_setup.doctor.findings import Context, Finding, Status
from alumet_setup.hostside.sysctl_precedence import Setter, normalize_key, overriding, parse_sysctl, sysctl_files
from alumet_setup.targets.hosts import LocalHost

PERSIST = "echo 'kernel.perf_event_paranoid = 2' | sudo tee /etc/sysctl.d/local.conf"
SYSCTL_W = "sudo sysctl -w kernel.perf_event_paranoid=2"
UNPROBED = Finding(Status.NOT_AVAILABLE, "not probed in this test")


def host(case: str) -> FixtureHost:
    return FixtureHost(FIXTURES / "sysctl" / case)


@pytest.fixture(autouse=True)
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real probe on a fixture tree: each test decides what the probe says (unprobed by default)."""
    stub(monkeypatch, "kernel.perf_probe", UNPROBED)


def paranoid(h: FixtureHost, monkeypatch: pytest.MonkeyPatch, has_perfmon: bool = True,
             probe: Finding | None = None, **options: object) -> Finding:
    stub(monkeypatch, "agent.capabilities", caps_finding(has_perfmon))
    if probe is not None:
        stub(monkeypatch, "kernel.perf_probe", probe)
    return context(h, **options).finding("kernel.perf_event_paranoid")


# ---- parsing

def test_parse_sysctl_syntax() -> None:
    text = (
        "# comment\n"
        "; also a comment\n"
        "\n"
        "kernel.perf_event_paranoid=1\n"
        "   kernel/perf_event_paranoid   =   2   \n"
        "-kernel.perf_event_paranoid = 3\n"
        "not an assignment\n"
        "!kernel.perf_event_paranoid\n"
        "net.ipv4.conf.*.rp_filter = 2\n"
        "kernel.printk = 3 4 1 3\n"
    )
    assert parse_sysctl(text) == [
        ("kernel/perf_event_paranoid", "1"),
        ("kernel/perf_event_paranoid", "2"),
        ("kernel/perf_event_paranoid", "3"),
        ("net/ipv4/conf/*/rp_filter", "2"),
        ("kernel/printk", "3 4 1 3"),
    ]


@pytest.mark.parametrize(("key", "normal"), [
    ("kernel.perf_event_paranoid", "kernel/perf_event_paranoid"),
    ("kernel/perf_event_paranoid", "kernel/perf_event_paranoid"),
    # First separator a dot: a slash is part of a name (VLAN interface eth0.100 in /proc/sys paths).
    ("net.ipv4.conf.eth0/100.rp_filter", "net/ipv4/conf/eth0.100/rp_filter"),
    ("net/ipv4/conf/eth0.100/rp_filter", "net/ipv4/conf/eth0.100/rp_filter"),
])
def test_normalize_key(key: str, normal: str) -> None:
    assert normalize_key(key) == normal


def test_glob_keys_match() -> None:
    assert sysctl.key_matches("kernel/perf_*")
    assert not sysctl.key_matches("net/ipv4/conf/*/rp_filter")


# ---- which files, in which order

@pytest.mark.parametrize(("case", "files"), [
    ("debian12", ["/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/99-protect-links.conf",
                  "/etc/sysctl.d/99-sysctl.conf", "/etc/sysctl.d/local.conf"]),
    ("debian13", ["/usr/lib/sysctl.d/50-default.conf", "/usr/lib/sysctl.d/50-pid-max.conf"]),
    # perf.conf sorts after local.conf although its directory comes later.
    ("perf-override", ["/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/99-protect-links.conf",
                       "/etc/sysctl.d/local.conf", "/usr/lib/sysctl.d/perf.conf"]),
    # /usr/lib/sysctl.d/local.conf is masked by the same name in /etc (the facts' `cat-config` example).
    ("zz99", ["/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/99-protect-links.conf",
              "/etc/sysctl.d/99-zz.conf", "/etc/sysctl.d/local.conf", "/usr/lib/sysctl.d/perf.conf"]),
    # perf.conf -> /dev/null masks the vendor perf.conf; perf.conf.dpkg-old is not a .conf name.
    ("devnull-mask", ["/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/99-protect-links.conf",
                      "/etc/sysctl.d/local.conf"]),
    # /lib is a real directory: it counts, but /usr/lib's 50-pid-max.conf masks its namesake.
    ("split-usr", ["/usr/lib/sysctl.d/50-pid-max.conf", "/lib/sysctl.d/60-perf.conf",
                   "/usr/lib/sysctl.d/99-protect-links.conf"]),
    # /lib -> usr/lib: the same files are not read twice.
    ("merged-usr", ["/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/60-perf.conf",
                    "/usr/lib/sysctl.d/99-protect-links.conf"]),
])
def test_sysctl_files_order(case: str, files: list[str]) -> None:
    assert sysctl_files(host(case)) == files


@pytest.mark.parametrize(("case", "setters"), [
    # /etc/sysctl.conf counts through 99-sysctl.conf, sorted under that name: before local.conf.
    ("debian12", [("/etc/sysctl.d/99-sysctl.conf", "1"), ("/etc/sysctl.d/local.conf", "2")]),
    ("debian13", []),
    ("perf-override", [("/etc/sysctl.d/local.conf", "2"), ("/usr/lib/sysctl.d/perf.conf", "4")]),
    ("zz-hardening", [("/etc/sysctl.d/local.conf", "2"), ("/etc/sysctl.d/zz-hardening.conf", "3")]),
    ("zz99", [("/etc/sysctl.d/99-zz.conf", "3"), ("/etc/sysctl.d/local.conf", "2"),
              ("/usr/lib/sysctl.d/perf.conf", "2")]),
    ("devnull-mask", [("/etc/sysctl.d/local.conf", "2")]),
    ("split-usr", [("/lib/sysctl.d/60-perf.conf", "1")]),
])
def test_boot_setters(case: str, setters: list[tuple[str, str]]) -> None:
    assert boot_setters(host(case)) == [Setter(f, v) for f, v in setters]


def test_overriding_compares_names_not_directories() -> None:
    setters = [Setter("/etc/sysctl.d/99-zz.conf", "3"), Setter("/etc/sysctl.d/local.conf", "2"),
               Setter("/usr/lib/sysctl.d/perf.conf", "4"), Setter("/run/sysctl.d/zz.conf", "2")]
    assert overriding(setters, "/etc/sysctl.d/local.conf") == [Setter("/usr/lib/sysctl.d/perf.conf", "4")]
    # Our file sets nothing yet: any later setter would win over what alumet-setup writes.
    assert [s.file for s in overriding(setters[:1] + setters[2:], "/etc/sysctl.d/local.conf")] == [
        "/usr/lib/sysctl.d/perf.conf", "/run/sysctl.d/zz.conf"]


# ---- the judgement

OK, WARN, FAIL = Status.OK, Status.WARN, Status.FAIL


@pytest.mark.parametrize(("value", "perfmon", "probe", "status", "step"), [
    (-1, False, None, OK, None),
    (0, False, None, OK, None),  # perf_paranoid_cpu() is `> 0`: CPU-wide events need no capability
    (1, True, None, OK, None),
    (1, False, None, FAIL, "capabilities"),
    (2, True, None, OK, None),
    (2, False, None, FAIL, "capabilities"),
    (3, True, None, WARN, "sysctl"),
    (3, True, OK, OK, None),
    (3, True, FAIL, FAIL, "sysctl"),
    (3, False, OK, FAIL, "sysctl"),
    (4, True, None, FAIL, "sysctl"),
])
def test_judge(value: int, perfmon: bool, probe: Status | None, status: Status, step: str | None) -> None:
    probed = Finding(probe, "probe") if probe else None
    verdict = judge(value, perfmon, probed)
    assert (verdict.status, verdict.step) == (status, step)


# ---- the check on the fixtures

def test_debian12_local_conf_wins_over_sysctl_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("debian12"), monkeypatch)
    assert finding.status is OK, finding.detail
    assert finding.data == {
        "live": 2, "boot": 2, "boot_file": "/etc/sysctl.d/local.conf",
        "setters": [{"file": "/etc/sysctl.d/99-sysctl.conf", "value": "1"},
                    {"file": "/etc/sysctl.d/local.conf", "value": "2"}],
        "overriding_files": [],
    }
    json.dumps(finding.data)


def test_debian13_unset_falls_back_to_the_debian_kernel_default(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("debian13"), monkeypatch)
    assert finding.status is WARN
    assert (finding.data["boot"], finding.data["boot_file"]) == (3, None)
    assert "a reboot will set 3 (the kernel default)" in finding.detail
    assert finding.fix == (PERSIST,)  # live is fine: no sysctl -w
    assert finding.install_step == "sysctl"


def test_vendor_perf_conf_overrides_local_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("perf-override"), monkeypatch)
    assert finding.status is WARN
    assert finding.data["overriding_files"] == ["/usr/lib/sysctl.d/perf.conf"]
    assert (finding.data["boot"], finding.data["boot_file"]) == (4, "/usr/lib/sysctl.d/perf.conf")
    assert "/usr/lib/sysctl.d/perf.conf (4) overrides /etc/sysctl.d/local.conf at boot" in finding.detail
    # The vendor file is masked by an edited copy in /etc, not edited; local.conf already says 2.
    assert len(finding.fix) == 1 and finding.fix[0].endswith(
        "/usr/lib/sysctl.d/perf.conf | sudo tee /etc/sysctl.d/perf.conf >/dev/null")


def test_zz_hardening_overrides_local_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("zz-hardening"), monkeypatch)
    assert finding.status is WARN
    assert finding.data["overriding_files"] == ["/etc/sysctl.d/zz-hardening.conf"]
    assert len(finding.fix) == 1 and finding.fix[0].startswith("sudo sed -i -E ")
    assert finding.fix[0].endswith(" /etc/sysctl.d/zz-hardening.conf")


def test_sysctl_file_option_sorting_last_is_not_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    # 'zzz-alumet.conf' sorts after 'zz-hardening.conf' ('z' > '-'): nothing overrides it, but it sets
    # nothing yet, so zz-hardening.conf's 3 is what the next boot applies.
    finding = paranoid(host("zz-hardening"), monkeypatch, sysctl_file="/etc/sysctl.d/zzz-alumet.conf")
    assert finding.data["overriding_files"] == []
    assert finding.status is WARN
    assert "a reboot will set 3 (/etc/sysctl.d/zz-hardening.conf)" in finding.detail
    assert finding.fix == ("echo 'kernel.perf_event_paranoid = 2' | sudo tee /etc/sysctl.d/zzz-alumet.conf",)


def test_99_zz_does_not_override_and_masked_vendor_local_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("zz99"), monkeypatch)
    assert finding.status is OK, finding.detail
    assert finding.data["overriding_files"] == []
    assert (finding.data["boot"], finding.data["boot_file"]) == (2, "/usr/lib/sysctl.d/perf.conf")
    assert all(s["file"] != "/usr/lib/sysctl.d/local.conf" for s in finding.data["setters"])


def test_dev_null_mask_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("devnull-mask"), monkeypatch)
    assert finding.status is OK
    assert finding.data["setters"] == [{"file": "/etc/sysctl.d/local.conf", "value": "2"}]


def test_split_usr_level_3_must_be_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("split-usr"), monkeypatch)
    assert finding.status is WARN
    assert finding.detail.startswith("live Debian-patched level 3: must be probed")
    assert "a reboot will set 1 (/lib/sysctl.d/60-perf.conf)" in finding.detail
    assert finding.fix == (SYSCTL_W,)  # the boot value is fine: only the live one needs setting


def test_split_usr_level_3_probed_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("split-usr"), monkeypatch, probe=Finding(OK, "perf_event_open worked"))
    assert finding.status is OK and finding.fix == ()


def test_no_perfmon_points_at_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    finding = paranoid(host("debian12"), monkeypatch, has_perfmon=False)
    assert finding.status is FAIL
    assert finding.detail.startswith("live 2 without cap_perfmon: own processes only")
    assert finding.fix == caps_finding(False).fix
    assert finding.install_step == "capabilities"


def test_ubuntu_level_4_fails_with_the_sysctl_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_fixture("sysctl/debian13", tmp_path)
    (root / "proc/sys/kernel/perf_event_paranoid").write_text("4\n")
    (root / "proc/version_signature").write_text("Ubuntu 6.8.0-31.31-generic 6.8.1\n")
    finding = paranoid(FixtureHost(root), monkeypatch)
    assert finding.status is FAIL
    assert finding.detail == "live 4 (Ubuntu patch): not supported even with capabilities"
    assert finding.fix == (PERSIST, SYSCTL_W)
    assert finding.install_step == "sysctl"


@pytest.mark.processes
def test_persist_fix_keeps_other_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_fixture("sysctl/zz-hardening", tmp_path)
    (root / "proc/sys/kernel/perf_event_paranoid").write_text("4\n")
    (root / "etc/sysctl.d/zz-hardening.conf").unlink()
    (root / "etc/sysctl.d/local.conf").write_text("kernel.sysrq = 0\nkernel.perf_event_paranoid = 4\n")
    finding = paranoid(FixtureHost(root), monkeypatch)
    *persist_steps, live = finding.fix
    assert live == SYSCTL_W and "tee -a /etc/sysctl.d/local.conf" in persist_steps[-1]
    persist = " && ".join(persist_steps)
    # Run it on the fixture's file (as the test user, without sudo) and read the result back.
    local = root / "etc/sysctl.d/local.conf"
    subprocess.run(["bash", "-c", persist.replace("sudo ", "").replace("/etc/sysctl.d/local.conf", str(local))],
                   check=True, capture_output=True)
    assert parse_sysctl(local.read_text()) == [("kernel/sysrq", "0"), ("kernel/perf_event_paranoid", "2")]


@pytest.mark.processes
def test_unoverride_fix_comments_the_key_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_fixture("sysctl/zz-hardening", tmp_path)
    finding = paranoid(FixtureHost(root), monkeypatch)
    target = root / "etc/sysctl.d/zz-hardening.conf"
    command = " && ".join(finding.fix).replace("sudo ", "").replace("/etc/sysctl.d/zz-hardening.conf", str(target))
    subprocess.run(["bash", "-c", command], check=True, capture_output=True)
    assert parse_sysctl(target.read_text()) == [("kernel/kptr_restrict", "2")]
    assert paranoid(FixtureHost(root), monkeypatch).status is OK


def test_kernel_command_line_sets_the_boot_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_fixture("sysctl/debian13", tmp_path)
    (root / "proc/cmdline").write_text("root=/dev/vda1 ro sysctl.kernel.perf_event_paranoid=-1 quiet\n")
    finding = paranoid(FixtureHost(root), monkeypatch)
    assert (finding.data["boot"], finding.data["boot_file"]) == (-1, "/proc/cmdline")
    assert finding.status is OK and "a reboot will set -1 (/proc/cmdline)" in finding.detail


def test_no_perf_events_in_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paranoid(FixtureHost(tmp_path), monkeypatch).status is Status.NOT_AVAILABLE


def test_real_machine_gives_a_valid_finding() -> None:
    finding = Context(LocalHost()).finding("kernel.perf_event_paranoid")
    assert finding.status is not Status.ERROR, finding.detail
    assert finding.data["live"] == int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    json.dumps(finding.data)


def test_a_fifo_among_the_sysctl_files_is_skipped_without_waiting(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor reads every sysctl.d candidate before it knows which are files (one round on a remote host): a FIFO
    named *.conf (systemd-sysctl skips it) must neither hold the check nor count."""
    import os
    import threading

    root = copy_fixture("sysctl/debian13", tmp_path)
    os.mkfifo(root / "etc/sysctl.d/zz-fifo.conf")
    found: list[Finding] = []
    reader = threading.Thread(target=lambda: found.append(paranoid(FixtureHost(root), monkeypatch)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # unblock the read so the test session can end, then fail
        with open(root / "etc/sysctl.d/zz-fifo.conf", "wb"):
            pass
        pytest.fail("doctor waited on a FIFO in /etc/sysctl.d")
    assert found[0].status is not Status.ERROR, found[0].detail
    assert "/etc/sysctl.d/zz-fifo.conf" not in [s["file"] for s in found[0].data["setters"]]


def test_the_boot_setters_are_asked_in_two_rounds_whatever_the_number_of_files() -> None:
    """listdir, then each file's realpath, stat and content at once: a remote host answers the sysctl.d chain in
    two rounds (it took four: the live value, the listing, realpath and stat, then the contents)."""
    import base64

    from alumet_setup.targets.batched_host import AnswerHost, key

    def encoded(value: object) -> object:  # as host_answers.answer encodes what the fixture tree answers
        if isinstance(value, bytes):
            return {"bytes": base64.b64encode(value).decode()}
        return {"stat": vars(value)} if value is not None and hasattr(value, "kind") else value

    tree = LocalHost(str(FIXTURES / "sysctl" / "zz99"))
    rounds = 0
    recorded = AnswerHost()
    for _ in range(4):
        recorded.unanswered = {}
        result = boot_setters(recorded)
        if not recorded.unanswered:
            break
        rounds += 1
        for qkey, (op, args) in recorded.unanswered.items():
            recorded.answers[qkey] = encoded(getattr(tree, op)(*args))
    assert rounds == 2, rounds
    assert result == boot_setters(tree)
    assert key("read_bytes", ["/etc/sysctl.d/local.conf"]) in recorded.answers
