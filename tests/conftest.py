"""Test-bed fixtures (tests/bed): container images, Rust mirror, stand-in source and their services."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bed"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # bedhost, for the VM scenario's builder containers

import installed_tool  # noqa: E402  (tests/bed is not a package)
import prepare  # noqa: E402
import rust_mirror  # noqa: E402
import scenarios  # noqa: E402
import services  # noqa: E402

if TYPE_CHECKING:  # the VM scenario (and vm, vm_image, bedhost with it) loads only when its fixture runs
    import vm_scenario as vm_scenario_module


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
def molecule_runs(bed: dict[str, str], bed_env: dict[str, str]) -> Iterator[dict[str, scenarios.Run]]:
    """`molecule test` of every scenario, started together (tests/bed/scenarios.py); test_molecule.py waits."""
    with scenarios.running(bed_env) as runs:
        yield runs
        _BACKGROUND.update({f"molecule {name}": run.seconds() for name, run in runs.items()})


@pytest.fixture(scope="session")
def vm_scenario(bed: dict[str, str], tool: installed_tool.InstalledTool, tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Iterator[vm_scenario_module.Background]:
    """The VM scenario (tests/bed/vm_scenario.py) in a background thread: its VMs boot once molecule's scenarios
    are done (TCG guests on a loaded 2-core machine missed the initramfs' wait for their disk), while the other
    tests go on; tests/vm waits for what it saw. QEMU and its helpers are killed by PID at the end whatever
    happens (this teardown, then vm.py's atexit hook). The full tier's steps run when a selected test of tests/vm
    is not marked `kernel`."""
    import vm
    import vm_scenario as vm_scenario_module

    missing = [] if shutil.which("qemu-system-x86_64") and shutil.which("qemu-img") else ["qemu-system-x86/qemu-utils"]
    if missing:
        if os.environ.get("ALUMET_BED_REQUIRED") == "1":
            pytest.fail(f"VM scenario needs {', '.join(missing)}")
        pytest.skip(f"VM scenario needs {', '.join(missing)}")
    vm_items = [item for item in request.session.items if _in_vm_tier(item.nodeid)]
    full = any(item.get_closest_marker("kernel") is None for item in vm_items)
    molecule = (request.getfixturevalue("molecule_runs")
                if any(item.path.name == "test_molecule.py" for item in request.session.items) else {})

    def after_molecule() -> None:
        for run in molecule.values():
            run.proc.wait()

    with vm.sigterm_interrupts():
        background = vm_scenario_module.Background(tool, tmp_path_factory.mktemp("vm"), vm.selected(), full,
                                                   before_boot=after_molecule)
        try:
            yield background
        finally:
            background.stop()
            _BACKGROUND.update({f"VM scenario: {step}": seconds for step, seconds in background.seen.timings.items()})


@pytest.fixture(scope="session", autouse=True)
def _background_work(request: pytest.FixtureRequest) -> None:
    """Start the session's long background work with its first test, when any of its tests is selected: the
    molecule scenarios, then the VM scenario (which waits for them). Without a test bed their tests skip (or
    fail, with ALUMET_BED_REQUIRED) on their own."""
    items = request.session.items
    if any(item.path.name == "test_molecule.py" for item in items):
        with contextlib.suppress(pytest.skip.Exception):
            request.getfixturevalue("molecule_runs")
    if any(_in_vm_tier(item.nodeid) for item in items):
        with contextlib.suppress(pytest.skip.Exception):
            request.getfixturevalue("vm_scenario")


def _in_vm_tier(nodeid: str) -> bool:
    return "/vm/" in f"/{nodeid}"


# ---- where the time goes: a per-tier table at the end of every run (CI's budget is printed, not guessed) ------
_TIER_OF_FILE = {
    "test_remote.py": "end-to-end (installed tool)",
    "test_first_install.py": "end-to-end (installed tool)",
    "test_host_accounts_kept.py": "end-to-end (installed tool)",
    "test_no_trace.py": "end-to-end (installed tool)",
    "test_printed_fixes.py": "end-to-end (installed tool)",
    "test_tool_upgrade.py": "end-to-end (installed tool)",
    "test_values_are_data_e2e.py": "end-to-end (installed tool)",
    "test_faults.py": "faults (killed runs, containers)",
}
_TIER_SECONDS: dict[str, list[float]] = {}
_BACKGROUND: dict[str, float] = {}  # seconds of the work beside the tests: molecule scenarios, the VM scenario


def _tier(item_path: str, nodeid: str, keywords: Any = ()) -> str:
    name = Path(item_path).name
    if _in_vm_tier(nodeid):
        return "VM (asserts on the background scenario)"
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
    if _BACKGROUND:
        terminalreporter.section("time of the work beside the tests (wall clock, concurrent with the above)")
        for what, seconds in _BACKGROUND.items():
            terminalreporter.write_line(f"{seconds:8.0f} s  {what}")
