#!/usr/bin/env python3
"""Build a local rustup dist server from this machine's stable toolchain (see docs/testbed.md).

Layout under .cache/rust-mirror (served by `python3 -m http.server`, see services.py):
  rustup/dist/<triple>/rustup-init{,.sha256}      copy of ~/.cargo/bin/rustup (same program)
  rustup/release-stable.toml                      for `rustup update` self-update checks
  dist/channel-rust-{stable,X.Y.Z,X.Y}.toml{,.sha256}
  dist/<date>/{rustc,cargo,rust-std}-<X.Y.Z>-<triple>.tar.zst{,.sha256}
Built once per toolchain and recipe; the tarballs are reproducible (sorted, owner 0, fixed mtime)
because any byte change in the channel manifest makes rustup reinstall every component.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / ".cache" / "rust-mirror"
RUSTUP_HOME = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
CARGO_HOME = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
COMPONENTS = ("rustc", "rust-std", "cargo")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_with_sha(path: Path, data: bytes | None = None) -> str:
    if data is not None:
        path.write_bytes(data)
    digest = sha256(path)
    # rustup wants lowercase hex first; a missing .sha256 shows up as "no release found".
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def toolchain() -> tuple[Path, str]:
    found = sorted(RUSTUP_HOME.glob("toolchains/stable-*"))
    if not found:
        sys.exit(f"rust-mirror: no stable toolchain under {RUSTUP_HOME}/toolchains")
    return found[0], found[0].name.removeprefix("stable-")


def package_tarball(tc: Path, manifest: str, comp: str, mtime: int, dest: Path) -> None:
    """rust-installer v3 tarball of one component, regular files only, fed to zstd."""
    # The host's lib/rustlib/manifest-<pkg>-<triple> is already in manifest.in format (no blank lines).
    lines = [ln for ln in (tc / "lib/rustlib" / manifest).read_text().splitlines() if ln.strip()]
    top = dest.name.removesuffix(".tar.zst")

    def info(arcname: str, size: int, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(f"{top}/{arcname}")
        ti.size, ti.mode, ti.mtime = size, mode, mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with dest.open("wb") as out:
        zstd = subprocess.Popen(["zstd", "-q", "-10", "-T0", "-c"], stdin=subprocess.PIPE, stdout=out)
        with tarfile.open(fileobj=zstd.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar:

            def add_text(arcname: str, text: str) -> None:
                data = text.encode()
                tar.addfile(info(arcname, len(data), 0o644), io.BytesIO(data))

            add_text("rust-installer-version", "3\n")
            add_text("components", f"{comp}\n")
            files = sorted(ln.split(":", 1)[1] for ln in lines if ln.startswith("file:"))
            # Parent directories first (sorted puts parents before children): rustup warns without them.
            dirs = {str(p) for rel in files for p in Path(f"{comp}/{rel}").parents if str(p) != "."}
            for d in sorted(dirs):
                ti = info(d, 0, 0o755)
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            add_text(f"{comp}/manifest.in", "\n".join(lines) + "\n")
            # Files are added as fresh regular entries: toolchains contain hard links, which rustup refuses.
            for rel in files:
                src = tc / rel
                mode = 0o755 if os.access(src, os.X_OK) else 0o644
                with src.open("rb") as f:
                    tar.addfile(info(f"{comp}/{rel}", src.stat().st_size, mode), f)
        zstd.stdin.close()
        if zstd.wait() != 0:
            sys.exit("rust-mirror: zstd failed")


def channel_manifest(date: str, versions: dict[str, str], triple: str, hashes: dict[str, str], full: str) -> str:
    out = ['manifest-version = "2"', f'date = "{date}"', ""]
    for pkg in COMPONENTS:
        # Under the upstream URL prefix so rustup rewrites it to RUSTUP_DIST_SERVER: no host or port here.
        url = f"https://static.rust-lang.org/dist/{date}/{pkg}-{full}-{triple}.tar.zst"
        out += [
            f"[pkg.{pkg}]",
            f'version = "{versions[pkg]}"',
            "",
            f"[pkg.{pkg}.target.{triple}]",
            "available = true",
            f'zst_url = "{url}"',
            f'zst_hash = "{hashes[pkg]}"',
            "",
        ]
    out += [
        "[pkg.rust]",
        f'version = "{versions["rustc"]}"',
        "",
        f"[pkg.rust.target.{triple}]",
        "available = true",
        "",
    ]
    for pkg in COMPONENTS:
        out += [f"[[pkg.rust.target.{triple}.components]]", f'pkg = "{pkg}"', f'target = "{triple}"', ""]
    return "\n".join(out)


def build() -> Path:
    tc, triple = toolchain()
    host_manifest = (tc / "lib/rustlib/multirust-channel-manifest.toml").read_text()
    rustup = CARGO_HOME / "bin" / "rustup"
    key = hashlib.sha256(Path(__file__).read_bytes() + host_manifest.encode() + sha256(rustup).encode())
    stamp = OUT / ".recipe"
    if stamp.exists() and stamp.read_text() == key.hexdigest():
        print(f"rust-mirror: {OUT} cached")
        return OUT
    start = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    date = re.search(r'^date = "([^"]+)"', host_manifest, re.M).group(1)
    versions = {p: re.search(rf'^\[pkg\.{p}\]\nversion = "([^"]+)"', host_manifest, re.M).group(1) for p in COMPONENTS}
    full = versions["rustc"].split()[0]  # e.g. 1.95.0; cargo's tarball carries the Rust version too
    (OUT / "dist" / date).mkdir(parents=True)
    hashes = {}
    for pkg in COMPONENTS:
        dest = OUT / "dist" / date / f"{pkg}-{full}-{triple}.tar.zst"
        comp = f"{pkg}-{triple}" if pkg == "rust-std" else pkg
        package_tarball(tc, f"manifest-{pkg}-{triple}", comp, calendar.timegm(time.strptime(date, "%Y-%m-%d")), dest)
        hashes[pkg] = write_with_sha(dest)
    manifest = channel_manifest(date, versions, triple, hashes, full).encode()
    for channel in ("stable", full, full.rsplit(".", 1)[0]):
        write_with_sha(OUT / "dist" / f"channel-rust-{channel}.toml", manifest)
    init_dir = OUT / "rustup" / "dist" / triple
    init_dir.mkdir(parents=True)
    shutil.copyfile(rustup, init_dir / "rustup-init")  # a copy: never a link into the real toolchain
    (init_dir / "rustup-init").chmod(0o755)
    write_with_sha(init_dir / "rustup-init")
    rustup_version = subprocess.run(
        [str(rustup), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    (OUT / "rustup" / "release-stable.toml").write_text(f"schema-version = '1'\nversion = '{rustup_version}'\n")
    stamp.write_text(key.hexdigest())
    print(f"rust-mirror: built Rust {full} ({date}) for {triple} in {time.monotonic() - start:.0f} s")
    return OUT


def version() -> str:
    """The Rust version the mirror serves, e.g. 1.95.0 (for inventories and tests)."""
    tc, _ = toolchain()
    text = (tc / "lib/rustlib/multirust-channel-manifest.toml").read_text()
    return re.search(r'^\[pkg\.rustc\]\nversion = "([^ "]+)', text, re.M).group(1)


if __name__ == "__main__":
    build()
