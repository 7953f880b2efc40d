"""The modules Ansible loads from the roles and the collection (roles/*/library, */filter_plugins and
plugins/ link here), with what they import: nothing outside this folder, so the collection ships only it
(galaxy.yml), and each loads beside its link's target in every form (checkout, wheel, collection).

Run on the managed host, standard library only and Python 3.8 (Ubuntu 22.04): proc_fstab, sysctl_precedence
(Ansible modules), host_answers and perf_event (sent by doctor with `python3 -c`). Run on the controller by
Ansible (filter plugins) and imported by the tool: capabilities, ptrace_need, rules, config_filter with profiles,
alumet_schema and safe_io."""
