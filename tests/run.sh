#!/usr/bin/env bash
# The whole test suite from nothing, on a fresh Debian 12 machine, as root:
#   host packages -> .venv -> test bed (images, Rust mirror, stand-in; all cached) -> one pytest run.
# Services (Rust mirror, git daemon) are started on 127.0.0.1 by the session fixture in tests/conftest.py.
set -euo pipefail
cd "$(dirname "$0")/.."

# Loopback test services must never go through a proxy.
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
# The project's podman settings (runc, ulimits within the host's); /etc is left alone.
export CONTAINERS_CONF="$PWD/.ci/containers.conf"
# A CI run must fail, not skip, when the test bed cannot be set up.
export ALUMET_BED_REQUIRED=1

HOST_PACKAGES=(podman runc debootstrap libcap2-bin git zstd gnupg python3-venv ca-certificates)
# The VM tier (tests/vm, tests/bed/vm.py) runs only with ALUMET_VM_TIER=1: under TCG on these 2-core
# machines it adds 25 minutes or more to a suite already near CI's 60 (docs/testbed.md, "Virtual machines").
VM_TIER=${ALUMET_VM_TIER:-0}
if [ "$VM_TIER" = 1 ]; then
  HOST_PACKAGES+=(qemu-system-x86 qemu-utils)
  SELECT=()
else
  SELECT=(-m "not vm")
fi
installed() {
  for p in "${HOST_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || return 1
  done
}
if ! installed; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${HOST_PACKAGES[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.pyproject.sha256
if ! sha256sum -c --status "$stamp" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  sha256sum pyproject.toml > "$stamp"
fi

# Build or refresh the test bed up front so its progress shows; the fixture then only checks caches.
time .venv/bin/python tests/bed/prepare.py
if [ "$VM_TIER" = 1 ]; then
  time .venv/bin/python tests/bed/vm_image.py  # cached outside the checkout: minutes once per recipe
fi

export PATH="$PWD/.venv/bin:$PATH"  # molecule finds ansible-playbook and pytest here
exec .venv/bin/python -m pytest -ra --durations=20 "${SELECT[@]}" "$@" tests/
