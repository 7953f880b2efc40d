"""The install steps, in playbook order: each is a tag of playbooks/install.yml (docs/architecture.md). A module
of its own, below every layer: doctor orders what to do by them, settings checks --only/--skip against them, and
neither may import the other."""

STEPS = ("prereqs", "rustup", "agent", "group", "sysctl", "hidepid", "powercap", "config", "capabilities",
         "service")
