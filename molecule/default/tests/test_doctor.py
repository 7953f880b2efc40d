"""After converge, `alumet-setup doctor` itself, run against each container through podman://, must
find every installed item ready: the verifier is the product's own checks, not a second copy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Absent in an unprivileged container: RAPL, NVIDIA, and perf events (no CAP_PERFMON, so even root is
# refused: the probe says so). These may be not-available, never ok by pretence, never fail.
HARDWARE = {"rapl.pmu", "rapl.powercap", "rapl.persistence", "rapl.access", "nvml.device", "nvml.library",
            "kernel.perf_probe", "agent.probe"}
# The service step is opt-in and not run here (no systemd in these containers either).
NOT_CHOSEN = {"agent.service"}
ALLOWED_WARN = {"system.virtualization"}  # "container: RAPL is usually absent here"
BUILDER = "ubuntu2204"  # builds for the three (test_default.py); the others have no build tools


def allowed(check, name):
    """Not ok, and rightly so: missing hardware, a container, and build tools where the binary was copied."""
    if check["id"] in HARDWARE | NOT_CHOSEN and check["status"] == "not-available":
        return True
    if check["id"] in ALLOWED_WARN and check["status"] == "warn":
        return True
    # doctor: once the agent is installed, build tools only matter for a rebuild.
    return (name != BUILDER and check["id"].startswith("toolchain.") and check["status"] == "warn"
            and check["data"].get("agent_installed") is True)


@pytest.fixture(scope="module")
def report(host):
    name = host.backend.name
    result = subprocess.run([sys.executable, "-m", "alumet_setup", "doctor", "--host", f"podman://{name}", "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["hosts"][0], result.returncode


def test_every_installed_item_is_ok(report, host):
    doc, _ = report
    bad = {c["id"]: f"{c['status']}: {c['detail']}" for c in doc["checks"]
           if c["status"] != "ok" and not allowed(c, host.backend.name)}
    assert not bad, bad


def test_missing_hardware_is_not_available_not_ok(report):
    doc, _ = report
    statuses = {c["id"]: c["status"] for c in doc["checks"]}
    for check_id in ("rapl.pmu", "rapl.powercap", "nvml.device"):
        assert statuses[check_id] == "not-available", check_id


def test_no_plugin_is_blocked_and_doctor_exits_0(report):
    doc, rc = report
    assert doc["plugins"]["procfs"]["verdict"] == "ready"
    assert doc["plugins"]["csv"]["verdict"] == "ready"
    assert not [p for p, v in doc["plugins"].items() if v["verdict"] == "blocked"]
    assert rc == 0 and doc["ready"]


def _asked(name):
    """The non-default choices molecule.yml gives this instance (provisioner.inventory.host_vars)."""
    import os
    from pathlib import Path

    import yaml

    scenario = yaml.safe_load((Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "molecule.yml").read_text())
    return ((scenario.get("provisioner") or {}).get("inventory", {}).get("host_vars") or {}).get(name) or {}


def test_judged_against_the_recorded_choices(report, host):
    doc, _ = report
    asked = _asked(host.backend.name)
    checks = {c["id"]: c for c in doc["checks"]}
    recorded = checks["system.choices"]["data"]["choices"]
    assert checks["system.choices"]["data"]["status"] == "ok"
    assert recorded["perf_paranoid_sysctl_file"] == asked.get("perf_paranoid_sysctl_file", "/etc/sysctl.d/local.conf")
    assert host.file(recorded["perf_paranoid_sysctl_file"]).contains("^kernel.perf_event_paranoid = 2$")
    # cap_sys_ptrace where the configuration needs it (slow_but_accurate), nowhere else.
    needed = asked.get("alumet_config_memory_mode") == "slow_but_accurate"
    assert recorded["capabilities_ptrace"] == "auto" and recorded["capabilities_ptrace_granted"] is needed
    assert checks["agent.capabilities"]["data"]["has_ptrace"] is needed
    assert bool(checks["agent.capabilities"]["data"]["ptrace_needed_by"]) is needed
