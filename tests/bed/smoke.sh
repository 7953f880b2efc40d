#!/usr/bin/env bash
# End-to-end check of the Rust mirror and the stand-in source, in a throwaway debian13 container:
# rustup-init from the mirror (sha256 checked), toolchain install, then `cargo install --git` of the
# stand-in, first without libssl-dev (must fail like openssl-sys), then with it (must build and run).
# Needs the services up (python3 tests/bed/services.py). Usage: tests/bed/smoke.sh [image]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/.ci/containers.conf}"
image="${1:-localhost/alumet-bed-debian13:latest}"
toolchain=$(python3 -c 'import sys; sys.path.insert(0, "tests/bed"); import rust_mirror as m; print(m.version())')
toolchain="${toolchain%.*}"  # the X.Y channel, as an inventory would name it

podman run --rm -i --network host -e toolchain="$toolchain" \
  -v "$PWD/.cache/apt/debian13:/var/cache/apt/archives" "$image" bash -s <<'INNER'
set -euo pipefail
export no_proxy=127.0.0.1,localhost DEBIAN_FRONTEND=noninteractive
mirror=http://127.0.0.1:18473 src=git://127.0.0.1:19418/alumet
t() { local s=$SECONDS; "$@"; echo "smoke: '$*' took $((SECONDS - s)) s" >&2; }
t apt-get update -qq
t apt-get install -qq -y --no-install-recommends gcc libc6-dev make pkg-config git curl ca-certificates >/dev/null
cd /tmp
triple="$(uname -m)-unknown-linux-gnu"
curl -fsSO "$mirror/rustup/dist/$triple/rustup-init" -O "$mirror/rustup/dist/$triple/rustup-init.sha256"
sha256sum -c rustup-init.sha256
chmod +x rustup-init
t env RUSTUP_DIST_SERVER=$mirror RUSTUP_UPDATE_ROOT=$mirror/rustup \
  ./rustup-init -v -y --no-modify-path --profile minimal --default-toolchain "$toolchain"
export PATH="$HOME/.cargo/bin:$PATH"
rustc --version
install=(cargo install --locked --git "$src" --tag v0.9.5 alumet-agent --root /opt/alumet)
if "${install[@]}" 2>&1 | tee /tmp/nossl.log; then
  echo "smoke: FAIL: the build succeeded without libssl-dev"; exit 1
fi
grep -q "Package openssl was not found in the pkg-config search path" /tmp/nossl.log
echo "smoke: without libssl-dev the build failed as openssl-sys would"
t apt-get install -qq -y --no-install-recommends libssl-dev >/dev/null
t "${install[@]}"
/opt/alumet/bin/alumet-agent --version
/opt/alumet/bin/alumet-agent --plugins procfs,csv --output-file /tmp/out.csv exec true  # no RAPL or GPU here
cat /tmp/out.csv
echo "smoke: OK"
INNER
