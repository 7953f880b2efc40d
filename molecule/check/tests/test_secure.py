"""After converge: what runs with capabilities, and what builds it, only root can change."""

import pytest

ROOT_ONLY = ["/opt/alumet", "/opt/alumet/bin", "/opt/alumet/bin/alumet-agent", "/opt/rust", "/etc/alumet",
             "/etc/alumet/alumet-config.toml"]


@pytest.mark.parametrize("path", ROOT_ONLY)
def test_root_owned_and_not_writable_by_others(host, path):
    f = host.file(path)
    assert f.exists, path
    assert (f.user, f.group) == ("root", "root"), path
    assert f.mode & 0o022 == 0, f"{path} is group- or world-writable: {oct(f.mode)}"


def test_nothing_under_the_toolchain_or_the_agent_is_writable_by_others(host):
    found = host.check_output("find /opt/rust /opt/alumet /etc/alumet -xdev \\( -perm -o+w -o -perm -g+w \\) "
                              "! -type l -print")
    assert found == "", found


def test_the_agent_link_points_at_the_root_owned_binary(host):
    link = host.file("/usr/local/bin/alumet-agent")
    assert link.is_symlink and link.linked_to == "/opt/alumet/bin/alumet-agent"
