"""Doctor looks where the roles install: alumet_setup/paths.py must equal the roles' defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alumet_setup import paths

ROLES = Path(__file__).parents[2] / "roles"


def default(role: str, name: str) -> object:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())[name]


@pytest.mark.parametrize(
    ("mirror", "role", "variable"),
    [
        (paths.RUSTUP_HOME, "rustup", "rustup_home"),
        (paths.CARGO_HOME, "rustup", "rustup_cargo_home"),
        (paths.RUSTUP_HOME, "alumet_agent", "alumet_agent_rustup_home"),
        (paths.CARGO_HOME, "alumet_agent", "alumet_agent_cargo_home"),
        (paths.AGENT_PREFIX, "alumet_agent", "alumet_agent_prefix"),
        (paths.AGENT_LINK, "alumet_agent", "alumet_agent_link"),
        (paths.AGENT_BIN, "capabilities", "capabilities_binary"),
        (paths.SYSCTL_FILE, "alumet_sysctl", "perf_paranoid_sysctl_file"),
        (paths.UDEV_RULE, "powercap", "powercap_rule_file"),
        (paths.CONFIG_FILE, "alumet_config", "alumet_config_file"),
        (paths.CONFIG_FILE, "capabilities", "capabilities_config_file"),
        (paths.GROUP, "capabilities", "capabilities_group"),
        (paths.CHOICES_FILE, "install_record", "install_record_file"),
        (paths.SERVICE_UNIT, "alumet_service", "alumet_service_unit_path"),
        (paths.GROUP, "alumet_group", "alumet_group_name"),
        (paths.GROUP, "powercap", "powercap_group"),
        (paths.GROUP, "hidepid", "hidepid_group"),
        ("/etc/fstab" + paths.FSTAB_BACKUP_SUFFIX, "hidepid", "hidepid_fstab_backup"),
    ],
)
def test_doctor_paths_equal_role_defaults(mirror: str, role: str, variable: str) -> None:
    assert default(role, variable) == mirror
