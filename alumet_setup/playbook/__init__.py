"""What Ansible is handed and how the play runs: which hosts (inventory), the settings checked against the roles'
argument specs (settings), the tool's own Ansible configuration (ansible_config), data for Ansible
(ansible_data), the become password question (local_become) and the run with its progress (runner)."""
