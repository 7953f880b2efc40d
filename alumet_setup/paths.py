"""Where alumet-setup puts things on a host. The roles' defaults/main.yml are the source of truth;
tests/unit/test_paths.py keeps these mirrors equal to them."""

RUSTUP_HOME = "/opt/rust/rustup"
CARGO_HOME = "/opt/rust/cargo"
AGENT_PREFIX = "/opt/alumet"
AGENT_BIN = "/opt/alumet/bin/alumet-agent"
AGENT_LINK = "/usr/local/bin/alumet-agent"
SYSCTL_FILE = "/etc/sysctl.d/local.conf"
UDEV_RULE = "/etc/udev/rules.d/70-alumet-powercap.rules"
CONFIG_FILE = "/etc/alumet/alumet-config.toml"
SERVICE_UNIT = "/etc/systemd/system/alumet.service"
GROUP = "alumet"
FSTAB_BACKUP_SUFFIX = ".alumet-setup.bak"
# Every record install keeps (the roles' created.json, choices.json, the lines and modes it replaced): uninstall
# removes or gives back only what these say, so a host without this directory has nothing to uninstall.
STATE_DIR = "/var/lib/alumet-setup"
CHOICES_FILE = f"{STATE_DIR}/choices.json"  # install_record role: the choices install applied
