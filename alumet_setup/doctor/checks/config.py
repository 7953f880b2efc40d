"""The Alumet configuration file alumet-setup writes: present, valid TOML, only what the agent accepts, and
fit for alumet.service when that unit runs it (`alumet-agent run` measures no process that only
`exec`/`watch` would announce: docs/alumet-upstream.md)."""

from __future__ import annotations

import os
from typing import Any

from ... import paths
from ..findings import Context, Finding, Status, check, ok
from . import rapl

# Where systemctl enable links a unit with WantedBy=multi-user.target.
WANTS_DIR = "/etc/systemd/system/multi-user.target.wants"


def service_unit(ctx: Context) -> dict[str, Any] | None:
    """alumet.service at the alumet_service role's path: its text, whether it is enabled, its config file."""
    try:
        text = ctx.host.read_text(paths.SERVICE_UNIT)
    except PermissionError:
        return None
    if text is None:
        return None
    from ...hostside import alumet_schema

    return {
        "unit": paths.SERVICE_UNIT, "text": text,
        "enabled": ctx.host.exists(f"{WANTS_DIR}/{os.path.basename(paths.SERVICE_UNIT)}"),
        "config": alumet_schema.unit_config_path(text),
    }


@check("config.file", "Alumet configuration", needs=("rapl.pmu", "rapl.powercap"))
def config_file(ctx: Context) -> Finding:
    path = ctx.options.config_path
    try:
        text = ctx.host.read_text(path)
    except PermissionError:
        return Finding(Status.WARN, f"{path} is not readable by this user: run doctor with sudo to check it",
                       data={"path": path})
    if text is None:
        status = Status.FAIL if ctx.options.config_explicit else Status.WARN
        return Finding(status, f"{path} is missing: the agent writes a default config in its working directory",
                       install_step="config", data={"path": path, "present": False})
    # Imported only when there is a file to judge: doctor's start-up time counts.
    import tomllib

    from ...hostside import alumet_schema

    data: dict[str, Any] = {"path": path, "present": True}
    unit = service_unit(ctx)
    by_service = unit is not None and unit["config"] == path
    if unit is not None:
        data["service"] = {"unit": unit["unit"], "enabled": unit["enabled"], "config": unit["config"]}
    # ${VAR} is substituted from the environment of whoever runs the agent: the service's when it runs this file.
    env = alumet_schema.service_environment(unit["text"], path) if by_service and unit else None
    try:
        text = alumet_schema.substitute_env(text, os.environ if env is None else env)
    except ValueError as exc:
        problem = f"env var substitution failed: {exc}"
        return Finding(Status.FAIL, f"{path}: {problem}", install_step="config", data={**data, "problems": [problem]})
    try:
        config = alumet_schema.parse_toml(text)
    except tomllib.TOMLDecodeError as exc:
        return Finding(Status.FAIL, f"{path} is not valid TOML: {exc}", install_step="config", data=data)
    data["plugins"] = alumet_schema.enabled_plugins(config)
    # One validator for doctor, `config render` and the templates' tests (alumet_schema.py).
    found = alumet_schema.validate(config) or (alumet_schema.service_write_problems(config) if by_service else [])
    if found:
        return Finding(Status.FAIL, f"{path}: {'; '.join(found)}",
                       install_step="config", data={**data, "problems": found})
    event_only = alumet_schema.event_only_measurements(config) if by_service else []
    if event_only:
        state = "enabled" if unit and unit["enabled"] else "installed, not enabled"
        return Finding(Status.WARN,
                       f"{path} is run by alumet.service ({state}) as `alumet-agent run`: {'; '.join(event_only)}",
                       fix="alumet-setup install --only config --set alumet_config_profile=energy-attribution",
                       install_step="config", data={**data, "event_only": event_only})
    no_rapl = all(ctx.finding(c).status is Status.NOT_AVAILABLE for c in ("rapl.pmu", "rapl.powercap"))
    if by_service and unit and "rapl" in data["plugins"] and no_rapl:
        # The rapl plugin's start fails without RAPL and the agent stops (docs/alumet-upstream.md):
        # an enabled service restarts it forever.
        status, state = (Status.FAIL, "enabled") if unit["enabled"] else (Status.WARN, "installed, not enabled")
        words = rapl.agent_refusal(False, False, ctx.host.exists(rapl.POWERCAP_DIR))
        return Finding(status, f"{path} is run by alumet.service ({state}) and starts the rapl plugin, but this host "
                       f"has no RAPL: the agent stops at start-up (\"{words}\")",
                       fix=("alumet-setup install --only config --set alumet_config_profile=procfs",
                            "sudo systemctl restart alumet.service"),
                       install_step="config", data={**data, "rapl_missing": True})
    return ok(f"{path}: plugins {', '.join(data['plugins']) or '(none)'}", **data)
