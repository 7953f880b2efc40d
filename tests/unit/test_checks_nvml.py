"""nvml.device and nvml.library: a GPU, and libnvidia-ml.so.1 (what the agent dlopens) in the ld.so cache."""

from __future__ import annotations

import os
from collections.abc import Sequence

from checkhelpers import FIXTURES, ScriptedHost, done, evaluate

from alumet_setup.doctor.findings import Status
from alumet_setup.targets.hosts import CommandResult, LocalHost

NVML = os.path.join(FIXTURES, "nvml")


def gpu_host(cache_file: str | None) -> ScriptedHost:
    def script(argv: Sequence[str]) -> CommandResult | None:
        if cache_file and argv[0].endswith("ldconfig") and argv[1:] == ["-p"]:
            with open(os.path.join(NVML, cache_file)) as f:
                return done(argv, f.read())
        return None

    return ScriptedHost(NVML, script)


def test_device() -> None:
    f = evaluate(gpu_host(None), "nvml.device")
    assert f.status is Status.OK and f.data["gpus"] == ["0000:3b:00.0"]


def test_no_gpu_is_not_available() -> None:
    none = LocalHost(root=os.path.join(FIXTURES, "rapl-none"))
    assert evaluate(none, "nvml.device").status is Status.NOT_AVAILABLE
    assert evaluate(none, "nvml.library").status is Status.NOT_AVAILABLE


def test_driver_library_in_the_cache() -> None:
    # A normal driver install: only the versioned soname, 64-bit and 32-bit; no -dev symlink needed.
    f = evaluate(gpu_host("ldconfig-p-driver.txt"), "nvml.library")
    assert f.status is Status.OK and f.data["library"] == ["/lib/x86_64-linux-gnu/libnvidia-ml.so.1"]
    assert f.fix == ()


def test_only_a_32_bit_library_does_not_count() -> None:
    f = evaluate(gpu_host("ldconfig-p-i386-only.txt"), "nvml.library")
    assert f.status is Status.FAIL and f.data["library"] == []
    assert "libnvidia-ml.so.1 is not in the ld.so cache" in f.detail and "LD_LIBRARY_PATH" in f.detail


def test_a_dev_symlink_alone_is_not_what_the_agent_loads() -> None:
    f = evaluate(gpu_host("ldconfig-p-dev-link-only.txt"), "nvml.library")
    assert f.status is Status.FAIL and f.data["dev_link"] == ["/usr/local/lib/libnvidia-ml.so"]
    assert f.detail.startswith("only libnvidia-ml.so is in the ld.so cache") and f.fix == ()


def test_no_library_suggests_no_symlink() -> None:
    f = evaluate(gpu_host("ldconfig-p-none.txt"), "nvml.library")
    assert f.status is Status.FAIL and f.fix == () and "ln -s" not in f.detail


def test_ldconfig_missing_is_an_error_not_a_verdict() -> None:
    f = evaluate(gpu_host(None), "nvml.library")
    assert f.status is Status.ERROR


def test_this_machine() -> None:
    host = LocalHost()
    f = evaluate(host, "nvml.library")
    assert f.status is not Status.ERROR
    if not host.exists("/dev/nvidia0") and not host.listdir("/proc/driver/nvidia/gpus"):
        assert f.status is Status.NOT_AVAILABLE
