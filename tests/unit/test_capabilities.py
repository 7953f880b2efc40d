"""The security.capability decoder and the getcap parser (alumet_setup/hostside/capabilities.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from checkhelpers import FIXTURES

from alumet_setup.hostside.capabilities import (
    CAP_NAMES,
    CapabilityError,
    cap_name,
    cap_number,
    decode_xattr,
    parse_cap_text,
    parse_getcap_line,
    setcap_command,
)
from alumet_setup.targets.hosts import LocalHost


def blob(name: str) -> bytes:
    return bytes.fromhex((FIXTURES / "caps" / f"{name}.hex").read_text().strip())


def test_names_table_matches_linux_numbers() -> None:
    assert len(CAP_NAMES) == 41  # 0..40: cap_chown .. cap_checkpoint_restore
    assert (cap_number("cap_sys_ptrace"), cap_number("cap_sys_admin"), cap_number("cap_sys_nice"),
            cap_number("CAP_PERFMON")) == (19, 21, 23, 38)
    assert cap_name(40) == "cap_checkpoint_restore"
    # A capability newer than this table, or printed as a number by an old libcap.
    assert cap_name(41) == "cap_41"
    assert cap_number("cap_41") == 41
    assert cap_number("38") == 38
    with pytest.raises(CapabilityError):
        cap_number("cap_flying")


def test_decode_revision2_from_setcap() -> None:
    caps = decode_xattr(blob("v2-perfmon-nice-ptrace-ep"))
    assert caps.revision == 2 and caps.rootid is None and caps.effective
    assert caps.permitted == {"cap_perfmon", "cap_sys_nice", "cap_sys_ptrace"}  # cap_perfmon: high word
    assert caps.sorted_effective() == ["cap_sys_ptrace", "cap_sys_nice", "cap_perfmon"]


def test_decode_permitted_without_effective_flag() -> None:
    caps = decode_xattr(blob("v2-nice-p"))
    assert caps.permitted == {"cap_sys_nice"} and not caps.effective
    assert caps.effective_names == frozenset()


def test_decode_inheritable_set() -> None:
    caps = decode_xattr(blob("v2-net-admin-p-bpf-i"))
    assert caps.permitted == {"cap_net_admin"}
    assert caps.inheritable == {"cap_bpf"}  # bit 39: high word of the inheritable pair


def test_decode_revision3_rootid() -> None:
    caps = decode_xattr(blob("v3-perfmon-nice-ep-rootid1000"))
    assert (caps.revision, caps.rootid, caps.effective) == (3, 1000, True)
    assert caps.permitted == {"cap_perfmon", "cap_sys_nice"}


def test_decode_revision1() -> None:
    caps = decode_xattr(blob("v1-sys-admin-nice-ep"))
    assert (caps.revision, caps.permitted) == (1, {"cap_sys_admin", "cap_sys_nice"})


@pytest.mark.parametrize("data", [
    blob("truncated"),
    b"\x01\x00",
    bytes.fromhex("01000004") + bytes(20),  # revision 4 does not exist
    blob("v2-perfmon-nice-ptrace-ep") + b"\x00\x00\x00\x00",  # revision 2 with revision 3's size
])
def test_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(CapabilityError):
        decode_xattr(data)


@pytest.mark.parametrize(("text", "permitted", "effective", "inheritable"), [
    ("cap_sys_nice,cap_perfmon=ep", {"cap_sys_nice", "cap_perfmon"}, True, set()),  # libcap >= 2.41
    ("= cap_net_raw+ep", {"cap_net_raw"}, True, set()),  # libcap < 2.41
    ("= cap_sys_nice,38+ep", {"cap_sys_nice", "cap_perfmon"}, True, set()),  # old libcap, unknown name
    ("cap_bpf=i cap_net_admin+p", {"cap_net_admin"}, False, {"cap_bpf"}),
    ("cap_net_admin=eip cap_sys_nice+ep", {"cap_net_admin", "cap_sys_nice"}, True, {"cap_net_admin"}),
    ("cap_sys_nice,cap_perfmon=ep [rootid=1000]", {"cap_sys_nice", "cap_perfmon"}, True, set()),
    ("=ep cap_sys_admin-ep", set(CAP_NAMES) - {"cap_sys_admin"}, True, set()),
])
def test_parse_cap_text(text: str, permitted: set[str], effective: bool, inheritable: set[str]) -> None:
    caps = parse_cap_text(text)
    assert caps.permitted == permitted
    assert caps.effective is effective
    assert caps.inheritable == inheritable


def test_parse_getcap_line_picks_the_file() -> None:
    out = ("/opt/alumet/bin/alumet-agent.old cap_sys_nice=ep\n"
           "/opt/alumet/bin/alumet-agent cap_sys_ptrace,cap_sys_nice,cap_perfmon=ep\n")
    caps = parse_getcap_line(out, "/opt/alumet/bin/alumet-agent")
    assert caps is not None and caps.permitted == {"cap_sys_ptrace", "cap_sys_nice", "cap_perfmon"}
    assert parse_getcap_line("", "/opt/alumet/bin/alumet-agent") is None  # getcap prints nothing: none set
    old = parse_getcap_line("/usr/bin/ping = cap_net_raw+ep\n", "/usr/bin/ping")
    assert old is not None and old.permitted == {"cap_net_raw"}


def test_setcap_command_is_one_call() -> None:
    # cap_sys_ptrace only where the host needs it (capabilities_ptrace=auto): the caller says.
    assert setcap_command("/opt/alumet/bin/alumet-agent") == (
        "sudo setcap 'cap_perfmon=ep cap_sys_nice=ep' /opt/alumet/bin/alumet-agent")
    assert setcap_command("/opt/alumet/bin/alumet-agent", ptrace=True) == (
        "sudo setcap 'cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep' /opt/alumet/bin/alumet-agent")
    assert setcap_command("/opt/my tools/alumet-agent", perfmon_capability=False, ptrace=True) == (
        "sudo setcap 'cap_sys_admin=ep cap_sys_nice=ep cap_sys_ptrace=ep' '/opt/my tools/alumet-agent'")


SETCAP = shutil.which("setcap") or next((p for p in ("/usr/sbin/setcap", "/sbin/setcap") if os.path.exists(p)), None)


@pytest.mark.processes
@pytest.mark.skipif(SETCAP is None, reason="setcap (libcap2-bin) is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="setting a file capability needs CAP_SETFCAP (root)")
def test_real_setcap_decoded_through_localhost(tmp_path: Path) -> None:
    """The kernel's own encoding, not ours: setcap writes it, LocalHost reads it back."""
    target = tmp_path / "opt" / "alumet-agent"
    target.parent.mkdir()
    shutil.copy("/bin/true", target)
    subprocess.run([SETCAP, "cap_perfmon=ep cap_sys_nice=ep cap_sys_ptrace=ep", str(target)], check=True)
    host = LocalHost(root=str(tmp_path))
    caps = decode_xattr(host.getxattr("/opt/alumet-agent", "security.capability") or b"")
    assert caps.effective and caps.permitted == {"cap_perfmon", "cap_sys_nice", "cap_sys_ptrace"}

    subprocess.run([SETCAP, "cap_sys_nice=p", str(target)], check=True)  # replaces the whole set
    caps = decode_xattr(host.getxattr("/opt/alumet-agent", "security.capability") or b"")
    assert not caps.effective and caps.permitted == {"cap_sys_nice"}

    subprocess.run([SETCAP, "-r", str(target)], check=True)
    assert host.getxattr("/opt/alumet-agent", "security.capability") is None
