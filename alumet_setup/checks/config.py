"""The Alumet configuration file alumet-setup writes: present, valid TOML, only sections the agent accepts."""

from __future__ import annotations

from typing import Any

from ..findings import Context, Finding, Status, check, ok


@check("config.file", "Alumet configuration")
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

    from .. import alumet_schema

    data: dict[str, Any] = {"path": path, "present": True}
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Finding(Status.FAIL, f"{path} is not valid TOML: {exc}", install_step="config", data=data)
    data["plugins"] = alumet_schema.enabled_plugins(config)
    # One validator for doctor, `config render` and the templates' tests (alumet_schema.py).
    found = alumet_schema.validate(config)
    if found:
        return Finding(Status.FAIL, f"{path}: {'; '.join(found)}",
                       install_step="config", data={**data, "problems": found})
    return ok(f"{path}: plugins {', '.join(data['plugins']) or '(none)'}", **data)
