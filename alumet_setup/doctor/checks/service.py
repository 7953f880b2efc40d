"""alumet.service, where install's service step put it: systemd runs it (a lab measures with the service, so a
stopped or crash-looping agent is the first thing to see). Hosts without the unit have nothing to judge."""

from __future__ import annotations

import os

from ... import paths
from ..findings import Context, Finding, Status, check, not_available, ok
from .config import service_unit

UNIT = os.path.basename(paths.SERVICE_UNIT)
# sd_booted(3): systemd is the running init exactly when this directory exists.
SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
RESTART = f"sudo systemctl restart {UNIT}"
JOURNAL = f"journalctl -u {UNIT} -n 50"


@check("agent.service", "alumet.service")
def agent_service(ctx: Context) -> Finding:
    unit = service_unit(ctx)
    if unit is None:
        return not_available(f"no {paths.SERVICE_UNIT} (install's service step is optional: "
                             "--set alumet_service_enabled=true)", unit=None)
    data = {"unit": unit["unit"], "enabled": unit["enabled"], "config": unit["config"]}
    if not ctx.host.exists(SYSTEMD_RUNTIME_DIR):
        return not_available(f"{UNIT} is installed, but systemd does not run this host", **data)
    systemctl = ctx.host.which("systemctl")
    if systemctl is None:
        return not_available(f"{UNIT} is installed, but this host has no systemctl", **data)
    state = ctx.host.run([systemctl, "is-active", UNIT], timeout=5).stdout.strip() or "unknown"
    data["active"] = state
    if state == "active":
        return ok(f"{UNIT} active ({'enabled' if unit['enabled'] else 'not enabled at boot'})", **data)
    if not unit["enabled"]:
        return Finding(Status.WARN, f"{UNIT} is installed but neither enabled nor running ({state})",
                       fix=f"sudo systemctl enable --now {UNIT}", install_step="service", data=data)
    # "activating" is systemd's auto-restart between two crashes (Restart=on-failure): the agent keeps stopping.
    why = "keeps stopping and restarting" if state == "activating" else f"is {state}"
    return Finding(Status.FAIL, f"{UNIT} is enabled but {why}: its log says why ({JOURNAL})",
                   fix=RESTART, install_step="service", data=data)
