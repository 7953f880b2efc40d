"""Verify the build prerequisites on every instance: the tools a cargo build of alumet-agent calls."""


def test_openssl_headers_visible_to_pkg_config(host):
    assert host.run("pkg-config --exists openssl").rc == 0, "pkg-config or libssl-dev missing"


def test_c_compiler_links(host):
    cmd = host.run("printf 'int main(void){return 0;}' | cc -x c - -o /tmp/prereqs-cc && /tmp/prereqs-cc")
    assert cmd.rc == 0, cmd.stderr


def test_git_and_setcap(host):
    assert host.run("git --version").rc == 0
    assert host.exists("setcap") or host.file("/usr/sbin/setcap").exists
