"""nvml.device and nvml.library: a GPU, and the unversioned libnvidia-ml.so in the ld.so cache."""

from __future__ import annotations

import os
from collections.abc import Sequence

from _fakes import FIXTURES, ScriptedHost, done, evaluate

from alumet_setup.findings import Status
from alumet_setup.hosts import CommandResult, LocalHost

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


def test_unversioned_library_in_the_cache() -> None:
    f = evaluate(gpu_host("ldconfig-p-dev.txt"), "nvml.library")
    assert f.status is Status.OK and f.data["unversioned"] == ["/lib/x86_64-linux-gnu/libnvidia-ml.so"]


def test_only_the_versioned_library() -> None:
    f = evaluate(gpu_host("ldconfig-p-versioned-only.txt"), "nvml.library")
    assert f.status is Status.FAIL
    assert f.fix == ("sudo ln -s libnvidia-ml.so.1 /lib/x86_64-linux-gnu/libnvidia-ml.so && sudo ldconfig")


def test_ldconfig_missing_is_an_error_not_a_verdict() -> None:
    f = evaluate(gpu_host(None), "nvml.library")
    assert f.status is Status.ERROR


def test_this_machine() -> None:
    host = LocalHost()
    f = evaluate(host, "nvml.library")
    assert f.status is not Status.ERROR
    if not host.exists("/dev/nvidia0") and not host.listdir("/proc/driver/nvidia/gpus"):
        assert f.status is Status.NOT_AVAILABLE
