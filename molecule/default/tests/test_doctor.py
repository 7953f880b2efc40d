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
ALLOWED_WARN = {"system.virtualization"}  # "container: RAPL is usually absent here"


@pytest.fixture(scope="module")
def report(host):
    name = host.backend.name
    result = subprocess.run([sys.executable, "-m", "alumet_setup", "doctor", "--host", f"podman://{name}", "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["hosts"][0], result.returncode


def test_every_installed_item_is_ok(report):
    doc, _ = report
    bad = {c["id"]: f"{c['status']}: {c['detail']}" for c in doc["checks"]
           if c["status"] != "ok" and not (c["id"] in HARDWARE and c["status"] == "not-available")
           and not (c["id"] in ALLOWED_WARN and c["status"] == "warn")}
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
