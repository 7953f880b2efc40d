"""Build once: ubuntu2204 has the oldest glibc of the three instances (2.35; Ubuntu 24.04 has 2.39, Debian
13 2.41), so it compiles alumet-agent for all three (roles/alumet_agent/tasks/plan.yml); the others get its
binary and none of the build tools. The builder has the tools a cargo build of alumet-agent calls."""

BUILDER = "ubuntu2204"


def test_only_the_oldest_glibc_compiled(host):
    # cargo's install tracking file exists only where cargo install ran; a copy is the binary alone.
    assert host.file("/opt/alumet/.crates2.json").exists is (host.backend.name == BUILDER)
    assert host.run("/opt/alumet/bin/alumet-agent --version").rc == 0


def test_openssl_headers_visible_to_pkg_config_on_the_builder_only(host):
    found = host.run("pkg-config --exists openssl").rc == 0
    assert found is (host.backend.name == BUILDER), "pkg-config and libssl-dev belong on the builder only"


def test_c_compiler_links_on_the_builder_only(host):
    cmd = host.run("printf 'int main(void){return 0;}' | cc -x c - -o /tmp/prereqs-cc && /tmp/prereqs-cc")
    assert (cmd.rc == 0) is (host.backend.name == BUILDER), cmd.stderr


def test_git_on_the_builder_and_setcap_everywhere(host):
    assert (host.run("git --version").rc == 0) is (host.backend.name == BUILDER)
    assert host.exists("setcap") or host.file("/usr/sbin/setcap").exists
