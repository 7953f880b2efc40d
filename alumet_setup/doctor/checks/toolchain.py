"""What building alumet-agent from source needs: rustup and Rust >= 1.89, a C toolchain, pkg-config,
the OpenSSL headers, and (optionally) git. Once the agent is installed they only matter for a rebuild."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from ... import paths
from ..findings import Context, Finding, Status, check, ok

MIN_RUST = Version("1.89")  # alumet 0.9.5: rust-version = "1.89" (edition 2024)
SYSTEM_BIN = f"{paths.CARGO_HOME}/bin"  # where alumet-setup's rustup role installs, system-wide
RUSTUP_ENV = {"RUSTUP_HOME": paths.RUSTUP_HOME, "CARGO_HOME": paths.CARGO_HOME}
# A per-user rustup (host_answers.which expands both spellings; the recorded hosts' questions name both).
USER_BINS = ("~/.cargo/bin", "$HOME/.cargo/bin")
# Never `curl | sh`: download rustup-init, check it against its published sha256, then run it.
_RUSTUP_URL = "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"
RUSTUP_INSTALL = (
    f'cd "$(mktemp -d)" && curl --proto =https -fsSLO "{_RUSTUP_URL}" && '
    f'echo "$(curl --proto =https -fsSL "{_RUSTUP_URL}.sha256" | cut -d" " -f1)  rustup-init" | sha256sum -c - && '
    "chmod +x rustup-init && sudo env " + " ".join(f"{k}={v}" for k, v in RUSTUP_ENV.items())
    + f" ./rustup-init -y --no-modify-path --profile minimal --default-toolchain {MIN_RUST}"
)


def apt(*packages: str) -> str:
    return f"sudo apt-get install -y {' '.join(packages)}"


def locate(ctx: Context, command: str) -> str | None:
    """The system-wide /opt/rust copy first (what alumet-setup builds with), then PATH, then ~/.cargo/bin."""
    st = ctx.host.stat(f"{SYSTEM_BIN}/{command}")
    if st and st.is_file and st.mode & 0o111:
        return f"{SYSTEM_BIN}/{command}"
    return ctx.host.which(command, extra_dirs=USER_BINS)


# missing() reads whether the agent is installed: every check that calls it needs agent.binary.
MISSING_NEEDS = ("agent.binary",)


def missing(ctx: Context, detail: str, fix: str, step: str, **data: object) -> Finding:
    """A missing build tool blocks only when there is no agent yet; afterwards only a rebuild needs it."""
    installed = ctx.finding("agent.binary").status is Status.OK
    if installed:
        return Finding(Status.WARN, f"{detail} (only needed to rebuild alumet-agent)", fix=fix, install_step=step,
                       data={**data, "agent_installed": True})
    return Finding(Status.FAIL, detail, fix=fix, install_step=step, data={**data, "agent_installed": False})


def rust_env(path: str) -> dict[str, str] | None:
    """rustup's proxies under /opt/rust need its homes in the environment; a per-user install does not."""
    return RUSTUP_ENV if path.startswith(SYSTEM_BIN + "/") else None


@check("toolchain.rustup", "rustup", needs=MISSING_NEEDS)
def rustup(ctx: Context) -> Finding:
    path = locate(ctx, "rustup")
    if path is None:
        return missing(ctx, "rustup not found (PATH, /opt/rust/cargo/bin, ~/.cargo/bin): distribution Rust is "
                       f"older than {MIN_RUST}", RUSTUP_INSTALL, "rustup", path=None)
    system_wide = rust_env(path) is not None
    where = "system-wide" if system_wide else "per-user: alumet-setup installs it system-wide under /opt/rust"
    return ok(f"{path} ({where})", path=path, system_wide=system_wide)


def rustc_version(output: str) -> Version | None:
    """'rustc 1.89.0 (29483883e 2025-08-04)' -> Version('1.89.0'); nightly/beta suffixes dropped."""
    match = re.match(r"rustc (\d+\.\d+\.\d+)", output.strip())
    try:
        return Version(match.group(1)) if match else None
    except InvalidVersion:
        return None


@check("toolchain.rust", "Rust (rustc, cargo)", needs=(*MISSING_NEEDS, "toolchain.rustup"))
def rust(ctx: Context) -> Finding:
    rustc, cargo = locate(ctx, "rustc"), locate(ctx, "cargo")
    data: dict[str, object] = {"rustc": rustc, "cargo": cargo, "version": None}
    if rustc is None or cargo is None:
        absent = " and ".join(name for name, path in (("rustc", rustc), ("cargo", cargo)) if path is None)
        return missing(ctx, f"{absent} not found", RUSTUP_INSTALL, "rustup", **data)
    env = rust_env(rustc)
    result = ctx.host.run([rustc, "--version"], env=env)
    version = rustc_version(result.stdout) if result.ok else None
    rustup_bin = rustc.rsplit("/", 1)[0] + "/rustup"
    prefix = "sudo env " + " ".join(f"{k}={v}" for k, v in env.items()) + " " if env else ""
    set_default = f"{prefix}{rustup_bin} default {MIN_RUST}"
    if version is None:
        why = (result.stderr or result.stdout).strip().splitlines()
        return missing(ctx, f"{rustc} --version failed: {why[-1] if why else result.rc}", set_default, "rustup", **data)
    data["version"] = str(version)
    if version < MIN_RUST:
        return missing(ctx, f"rustc {version} is older than {MIN_RUST} (alumet 0.9.5 needs edition 2024)",
                       set_default, "rustup", **data)
    return ok(f"rustc {version}, cargo at {cargo}", **data)


@check("toolchain.cc", "C compiler and linker", needs=MISSING_NEEDS)
def cc(ctx: Context) -> Finding:
    # rustc links through `cc`; the -sys crates compile C with it too.
    path = ctx.host.which("cc") or ctx.host.which("gcc")
    if path is None:
        return missing(ctx, "no cc or gcc: rustc cannot link", apt("gcc", "libc6-dev", "make"), "prereqs", path=None)
    return ok(path, path=path)


@check("toolchain.pkg_config", "pkg-config", needs=MISSING_NEEDS)
def pkg_config(ctx: Context) -> Finding:
    path = ctx.host.which("pkg-config")
    if path is None:
        return missing(ctx, "pkg-config not found: openssl-sys cannot find OpenSSL", apt("pkg-config"), "prereqs",
                       path=None)
    return ok(path, path=path)


@check("toolchain.openssl", "OpenSSL headers", needs=(*MISSING_NEEDS, "toolchain.pkg_config"))
def openssl(ctx: Context) -> Finding:
    fix = apt("pkg-config", "libssl-dev")
    pkg = ctx.data("toolchain.pkg_config", "path")
    if pkg is None:
        return missing(ctx, "cannot look for OpenSSL without pkg-config", fix, "prereqs")
    # The openssl CLI package is not enough: openssl-sys needs the headers and openssl.pc of libssl-dev.
    result = ctx.host.run([pkg, "--modversion", "openssl"])
    if not result.ok:
        return missing(ctx, "openssl.pc not found: libssl-dev (headers) is missing", fix, "prereqs")
    version = result.stdout.strip()
    return ok(f"OpenSSL {version} (libssl-dev)", version=version)


@check("toolchain.git", "git", needs=MISSING_NEEDS)
def git(ctx: Context) -> Finding:
    path = ctx.host.which("git")
    if path is None:
        installed = ctx.finding("agent.binary").status is Status.OK
        detail = "git not found: optional, but a build's version string becomes alpha-unknown"
        return Finding(Status.WARN, f"{detail} (only needed to rebuild alumet-agent)" if installed else detail,
                       fix=apt("git"), install_step="prereqs", data={"path": None, "agent_installed": installed})
    return ok(path, path=path)
