"""Test-bed fixtures (tests/bed): container images, Rust mirror, stand-in source and their services."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))

import installed_tool  # noqa: E402  (tests/bed is not a package)
import prepare  # noqa: E402
import rust_mirror  # noqa: E402
import services  # noqa: E402
import sshd  # noqa: E402


@pytest.fixture(scope="session")
def bed_env() -> dict[str, str]:
    """Environment for podman and molecule: the project's containers.conf, no proxy for loopback."""
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / ".ci" / "containers.conf"))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    # Molecule's inventory reads it (${BED_RUST_TOOLCHAIN}): the mirror serves the host's X.Y only.
    os.environ["BED_RUST_TOOLCHAIN"] = ".".join(rust_mirror.version().split(".")[:2])
    return dict(os.environ)


@pytest.fixture(scope="session")
def bed(bed_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Images, mirror and stand-in built (cached) and the services up on 127.0.0.1 for the session.

    Skips where podman or root is missing, unless ALUMET_BED_REQUIRED=1 (tests/run.sh sets it), so a
    CI machine never passes by skipping.
    """
    missing = [] if shutil.which("podman") and shutil.which("debootstrap") else ["podman/debootstrap"]
    missing += [] if os.geteuid() == 0 else ["root"]
    if missing:
        if os.environ.get("ALUMET_BED_REQUIRED") == "1":
            pytest.fail(f"test bed needs {', '.join(missing)}")
        pytest.skip(f"test bed needs {', '.join(missing)}")
    prepare.main()
    with services.running():
        yield {
            "mirror_url": services.MIRROR_URL,
            "rustup_update_root": services.RUSTUP_UPDATE_ROOT,
            "git_url": services.GIT_URL,
        }


@pytest.fixture(scope="session")
def tool(tmp_path_factory: pytest.TempPathFactory) -> installed_tool.InstalledTool:
    """alumet-setup installed by the README's first command (a wheel in a venv, not the checkout): what the
    end-to-end tiers run, from a directory outside the checkout."""
    base = tmp_path_factory.mktemp("installed-tool")
    return installed_tool.install(base / "home", base / "work")


@pytest.fixture(scope="session")
def vm_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vm")


@pytest.fixture(scope="session")
def vms(bed_env: dict[str, str], vm_work: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """Debian 13 and Ubuntu 24.04 VMs (tests/bed/vm.py), booted together, reached over SSH on 127.0.0.1
    with a key made for this session; killed by PID at the end whatever happens (this teardown, a
    finalizer, and vm.py's atexit hook as the last resort). Not the `bed` fixture: the VMs get the test
    services on private ports (vm.private_services), so they never use the shared 18473/19418."""
    import standin
    import vm

    missing = [] if shutil.which("qemu-system-x86_64") and shutil.which("qemu-img") else ["qemu-system-x86/qemu-utils"]
    missing += [] if shutil.which("debootstrap") and os.geteuid() == 0 else ["debootstrap and root"]
    if missing:
        if os.environ.get("ALUMET_BED_REQUIRED") == "1":
            pytest.fail(f"VM tier needs {', '.join(missing)}")
        pytest.skip(f"VM tier needs {', '.join(missing)}")
    rust_mirror.build()
    standin.build()
    key = sshd.make_key(vm_work / "id_ed25519")
    with vm.private_services(vm_work), vm.running(vm.selected(), vm_work, key, cpus=1) as running:
        request.addfinalizer(lambda: [v.stop() for v in running.values()])
        for name, v in running.items():
            print(f"vm {name}: {v.accel}, SSH after {v.timings['boot_s']} s", file=sys.stderr)
        yield running


# ---- where the time goes: a per-tier table at the end of every run (CI's budget is printed, not guessed) ------
_TIER_OF_FILE = {
    "test_remote.py": "end-to-end (installed tool)",
    "test_first_install.py": "end-to-end (installed tool)",
    "test_agent_service_run.py": "end-to-end (installed tool)",
    "test_host_accounts_kept.py": "end-to-end (installed tool)",
    "test_no_trace.py": "end-to-end (installed tool)",
    "test_printed_fixes.py": "end-to-end (installed tool)",
    "test_tool_upgrade.py": "end-to-end (installed tool)",
    "test_values_are_data_e2e.py": "end-to-end (installed tool)",
    "test_faults.py": "faults (killed runs, containers)",
}
_TIER_SECONDS: dict[str, list[float]] = {}


def _tier(item_path: str, nodeid: str, keywords: Any = ()) -> str:
    name = Path(item_path).name
    if "/vm/" in f"/{nodeid}":
        return "VM (QEMU)"
    if name == "test_molecule.py":
        return "molecule (all scenarios at once)"
    if name in _TIER_OF_FILE:
        return _TIER_OF_FILE[name]
    if nodeid.startswith("tests/unit/"):
        return "unit, starting processes" if "processes" in keywords else "unit, hermetic"
    return "other integration (containers, lint, collection)"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _TIER_SECONDS.setdefault(_tier(report.fspath, report.nodeid, report.keywords), [0.0, 0])
    entry[0] += report.duration
    entry[1] += report.when == "call"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIER_SECONDS:
        return
    terminalreporter.section("time per tier (setup + call + teardown)")
    total = sum(seconds for seconds, _ in _TIER_SECONDS.values())
    for tier, (seconds, tests) in sorted(_TIER_SECONDS.items(), key=lambda item: -item[1][0]):
        terminalreporter.write_line(f"{seconds:8.0f} s  {100 * seconds / total:5.1f} %  {tests:5d} tests  {tier}")
    terminalreporter.write_line(f"{total:8.0f} s  in all")
