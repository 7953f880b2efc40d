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

HOST_PACKAGES=(podman runc debootstrap libcap2-bin git zstd gnupg python3-venv ca-certificates
               qemu-system-x86 qemu-utils)
# Every run proves the kernel promises in one Debian 13 VM (the tests marked `kernel`; the scenario runs in
# the background beside the container tiers, tests/bed/vm_scenario.py). ALUMET_VM_TIER=1 runs the whole VM
# tier instead: Debian 13 and Ubuntu 24.04, with the rerun, service-step and ptrace steps (about an hour more
# under TCG on these 2-core machines; docs/testbed.md, "Virtual machines").
if [ "${ALUMET_VM_TIER:-0}" = 1 ]; then
  SELECT=()
else
  SELECT=(-m "not vm or kernel")
  export ALUMET_VM_PLATFORMS=${ALUMET_VM_PLATFORMS:-debian13}
fi
# Where the time goes: each phase's seconds, printed at the end whatever happens.
PHASES=()
phase() { PHASES+=("$(printf '%6d s  %s' $((SECONDS - phase_start)) "$1")"); phase_start=$SECONDS; }
report() { echo "== time per phase of tests/run.sh =="; printf '%s\n' "${PHASES[@]}"; printf '%6d s  in all\n' "$SECONDS"; }
SECONDS=0 phase_start=0
trap report EXIT
installed() {
  for p in "${HOST_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || return 1
  done
}
if ! installed; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${HOST_PACKAGES[@]}"
fi
phase "host packages"

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
phase "Python environment (.venv)"

# Build or refresh the test bed up front so its progress shows; the fixture then only checks caches. The VM
# images are built (or found cached) by the VM scenario's thread, beside the first tests.
.venv/bin/python tests/bed/prepare.py
phase "test bed (container images, Rust mirror, stand-in)"

export PATH="$PWD/.venv/bin:$PATH"  # molecule finds ansible-playbook and pytest here
rc=0
.venv/bin/python -m pytest -ra --durations=20 "${SELECT[@]}" "$@" tests/ || rc=$?
phase "pytest (its own tables above: per tier, and the work beside the tests)"
exit "$rc"
