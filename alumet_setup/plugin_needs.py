"""What each Alumet plugin needs from a host, by doctor's check ids (docs/alumet-upstream.md). A module of its
own, below every layer: doctor judges the plugins by it, and the CLI checks --plugin against it before doctor's
checks are loaded (doctor's connections start first: they are what a run waits for)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PluginNeeds:
    required: tuple[str, ...]
    recommended: tuple[str, ...] = ()


PLUGINS: dict[str, PluginNeeds] = {
    "rapl": PluginNeeds(required=("agent.binary", "rapl.access"), recommended=("rapl.persistence",)),
    "perf": PluginNeeds(
        required=("agent.binary", "kernel.perf_event_paranoid", "kernel.perf_probe"),
        recommended=("agent.capabilities",),
    ),
    "procfs": PluginNeeds(required=("agent.binary", "procfs.hidepid")),
    "nvml": PluginNeeds(required=("agent.binary", "nvml.device", "nvml.library")),
    "energy-attribution": PluginNeeds(
        required=("agent.binary", "rapl.access", "procfs.hidepid"),
        recommended=("rapl.persistence", "config.file"),
    ),
    "csv": PluginNeeds(required=("agent.binary",)),
}
