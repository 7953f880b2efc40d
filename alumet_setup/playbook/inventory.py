"""Which hosts `install` acts on, checked strictly before anything runs, and the inventory for them.

A --host is either a name (host or group) of the user's -i inventory, or an ad-hoc SSH target
`[user@]host[:port]` (IPv6 as `[addr]:port` or a bare address). Ad-hoc targets get a generated
inventory: their spec is data, never a command-line fragment, so anything that a shell or ssh could
read as syntax (`;`, spaces, a leading `-` that ssh takes for an option) is refused up front.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import ipaddress
import os
import re
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..targets.ssh import SshTarget

LOCAL_NAMES = ("local", "localhost")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SPEC = re.compile(r"(?:(?P<user>[^@]*)@)?(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:@]*))(?::(?P<port>[^:@]*))?")
_EXPECTED = "expected [user@]host[:port], an IPv4/IPv6 address, or a name from --inventory"


class InventoryError(ValueError):
    """A --host, --user or --inventory that cannot be used. The text is one line."""


@dataclass(frozen=True)
class Target:
    """One host to act on. `name` is its inventory hostname (the label in progress and summary)."""

    name: str
    spec: str
    address: str | None = None  # None: this machine, over a local connection
    user: str | None = None
    port: int | None = None
    from_inventory: bool = False
    url: str | None = None  # doctor only: a testinfra URL (podman://NAME...) read through that backend

    @property
    def local(self) -> bool:
        return self.address is None and not self.from_inventory and self.url is None

    def reach(self) -> str | SshTarget | None:
        """How doctor's checks read this ad-hoc target: None (this machine), its URL, or ssh."""
        from ..targets.ssh import SshTarget

        if self.local or self.url is not None:
            return self.url
        return SshTarget(name=self.spec, destination=self.address or self.spec, user=self.user, port=self.port)

    def doctor_host(self) -> str | None:
        """The `alumet-setup doctor --host` value that checks this host; None for this machine."""
        if self.local:
            return None
        if self.from_inventory:
            return self.name  # with `doctor -i INVENTORY`, which reaches it as Ansible does
        return self.spec


def check_user(user: str, what: str = "--user") -> str:
    if not _USER.fullmatch(user):
        raise InventoryError(f"{what} {user!r}: not a valid user name (letters, digits, '_', '.', '-')")
    return user


def parse_host(spec: str) -> Target:
    """`[user@]host[:port]` -> Target, or InventoryError naming what is wrong, in one line."""
    if spec in LOCAL_NAMES:
        return Target(name="localhost", spec=spec)
    shown = repr(spec)
    if not spec or not spec.strip():
        raise InventoryError(f"--host {shown}: empty host ({_EXPECTED})")
    if spec.startswith("-"):
        raise InventoryError(f"--host {shown}: a host cannot start with '-' ({_EXPECTED})")
    bad = sorted(set(re.sub(r"[A-Za-z0-9_.:@\[\]-]", "", spec)))
    if bad:  # shell metacharacters, spaces, control characters, non-ASCII
        listed = " ".join(repr(c) for c in bad)
        raise InventoryError(f"--host {shown}: {listed} not allowed in a host ({_EXPECTED})")

    user = port_text = None
    rest = spec
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        check_user(user, f"--host {shown}: user")
    if rest.count(":") >= 2 and not rest.startswith("["):
        host = _check_ipv6(rest, shown)  # a bare IPv6 address carries no port
    else:
        match = _SPEC.fullmatch(rest)
        if not match:
            raise InventoryError(f"--host {shown}: {_EXPECTED}")
        port_text = match.group("port")
        if match.group("v6") is not None:
            host = _check_ipv6(match.group("v6"), shown)
        else:
            host = match.group("host") or ""
            if not host:
                raise InventoryError(f"--host {shown}: the host part is empty ({_EXPECTED})")
            if host.startswith("-") or not _HOSTNAME.fullmatch(host) or len(host) > 253:
                raise InventoryError(f"--host {shown}: {host!r} is not a valid host name or address")
            if re.fullmatch(r"[0-9.]+", host):
                try:
                    ipaddress.IPv4Address(host)
                except ValueError:
                    raise InventoryError(f"--host {shown}: {host!r} is not a valid IPv4 address") from None
    port = None
    if port_text is not None:
        port = port_number(port_text)
        if port is None:
            raise InventoryError(f"--host {shown}: port must be a number from 1 to 65535")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", host) + (f"_{port}" if port else "")
    return Target(name=name, spec=spec, address=host, user=user, port=port)


# A testinfra URL's host part other than ssh's: a container, pod or inventory name (never an option).
_URL_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:-]*")


def check_url(spec: str) -> str:
    """A doctor --host testinfra URL (`podman://NAME`, `ssh://[user@]host[:port]`...) checked before anything
    is contacted: a backend testinfra has and can load, a URL that parses, a host that is no option."""
    from urllib.parse import urlsplit

    shown = repr(spec)
    try:
        url = urlsplit(spec)
        url.port  # noqa: B018  (parsing the port is what raises)
    except ValueError as exc:
        raise InventoryError(f"--host {shown}: not a valid URL ({exc})") from None
    from testinfra.backend import BACKENDS, get_backend_class  # only for a URL: doctor's start-up stays light

    if url.scheme not in BACKENDS:
        raise InventoryError(f"--host {shown}: unknown connection type {url.scheme!r} (testinfra's: "
                             f"{', '.join(BACKENDS)})")
    try:
        get_backend_class(url.scheme)  # imports the backend, which needs its own package (paramiko, pywinrm...)
    except (ImportError, RuntimeError) as exc:
        raise InventoryError(f"--host {shown}: {str(exc).splitlines()[0]}") from None
    if url.scheme in ("ssh", "safe-ssh", "paramiko"):
        try:
            parse_host(url.netloc)  # the same rules as a plain --host
        except InventoryError as exc:
            raise InventoryError(str(exc).replace(f"--host {url.netloc!r}", f"--host {shown}", 1)) from None
    elif url.scheme != "local" and not _URL_HOST.fullmatch(url.netloc):
        raise InventoryError(f"--host {shown}: {url.netloc!r} is not a host or container name")
    return spec


def port_number(text: str) -> int | None:
    """A TCP port from its text, None unless 1 to 65535 in ASCII digits (str.isdigit() takes '²', and
    int() refuses more than 4300 digits with a ValueError)."""
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        return None
    return int(text)


def _check_ipv6(text: str, shown: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise InventoryError(f"--host {shown}: {text!r} is not a valid IPv6 address") from None


class Inventory:
    """A user's -i inventory, checked (check_text_inventory) and parsed by Ansible once: every question a
    command has about it (its host and group names, what a group stands for, how doctor reaches a host)
    asks this one parse. Functions below take it or a path; a command loads it once and passes it on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._manager = _load(path)

    def names(self) -> tuple[list[str], list[str]]:
        """Host names and group names (InventoryError when it has no host)."""
        hosts = sorted(h.name for h in self._manager.get_hosts())
        groups = sorted(g for g in self._manager.groups if g not in ("all", "ungrouped"))
        if not hosts:
            raise InventoryError(f"--inventory {self.path}: no hosts found (not a valid INI or YAML inventory?)")
        return hosts, groups

    def expand(self, names: Sequence[str]) -> list[str]:
        """The hosts that host and group `names` stand for: in the order named, each group in inventory
        order, each host once."""
        return list(dict.fromkeys(h.name for name in names or ["all"] for h in self._manager.get_hosts(pattern=name)))

    def ssh_targets(self, names: Sequence[str]) -> list[str | SshTarget]:
        """For doctor: each host of `names` as an SshTarget built from its inventory variables
        (ansible_host/port/user/ssh_private_key_file/ssh_common_args), "local" for a local connection, a
        testinfra podman:// URL for Ansible's podman connection, and a testinfra ansible:// URL for any other."""
        from .ansible_config import isolated

        with isolated():
            return _ssh_targets(self, names)


def loaded(inventory: str | Inventory) -> Inventory:
    """`inventory` parsed: as it is when it already was."""
    return inventory if isinstance(inventory, Inventory) else Inventory(inventory)


def read_inventory(inventory: str | Inventory) -> tuple[list[str], list[str]]:
    """Host names and group names of an INI or YAML inventory, parsed by Ansible itself."""
    return loaded(inventory).names()


def expand_hosts(inventory: str | Inventory, names: Sequence[str]) -> list[str]:
    """Inventory.expand."""
    return loaded(inventory).expand(names)


# Inventory variables doctor needs to reach a host the way Ansible would, with their older aliases.
# Ansible's podman connection plugin, under its names.
PODMAN_CONNECTIONS = ("containers.podman.podman", "podman")
_SSH_VARS = {
    "host": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "connection": ("ansible_connection",),
    "common_args": ("ansible_ssh_common_args",),
    "extra_args": ("ansible_ssh_extra_args",),
}


def ssh_targets(inventory: str | Inventory, names: Sequence[str]) -> list[str | SshTarget]:
    """Inventory.ssh_targets."""
    return loaded(inventory).ssh_targets(names)


def _ssh_targets(inventory: Inventory, names: Sequence[str]) -> list[str | SshTarget]:
    import shlex

    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    from ..targets.ssh import SshTarget

    path = inventory.path
    manager = inventory._manager
    loader = manager._loader
    variables = VariableManager(loader=loader, inventory=manager)
    targets: list[str | SshTarget] = []
    for name in inventory.expand(names):
        host_vars = variables.get_vars(host=manager.get_host(name), include_hostvars=False)
        templar = Templar(loader=loader, variables=host_vars)

        def var(key: str, host_vars: dict[str, Any] = host_vars, templar: Templar = templar,
                name: str = name) -> str | None:
            for alias in _SSH_VARS[key]:
                if host_vars.get(alias) not in (None, ""):
                    try:
                        return str(templar.template(host_vars[alias]))
                    except Exception as exc:  # Ansible's template errors are many and multi-line
                        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        raise InventoryError(f"--inventory {path}: {name}: {alias}: {first}") from None
            return None

        connection = var("connection") or "ssh"
        if connection == "local":
            targets.append("local")
        elif connection in PODMAN_CONNECTIONS:  # testinfra's own backend: `podman exec`, no Ansible per command
            targets.append(f"podman://{var('host') or name}")
        elif connection not in ("ssh", "smart", "paramiko", "ansible.builtin.ssh"):
            targets.append(f"ansible://{name}?ansible_inventory={os.path.abspath(path)}")
        else:
            port, key = var("port"), var("key")
            try:
                extra = tuple(shlex.split(var("common_args") or "") + shlex.split(var("extra_args") or ""))
            except ValueError as exc:
                raise InventoryError(f"--inventory {path}: {name}: bad ansible_ssh_common_args: {exc}") from None
            number = port_number(port) if port is not None else None
            if port is not None and number is None:
                raise InventoryError(f"--inventory {path}: {name}: ansible_port {port[:40]!r} is not a number from "
                                     "1 to 65535")
            targets.append(SshTarget(
                name=name, destination=var("host") or name, user=var("user"), port=number,
                identity_file=os.path.expanduser(key) if key else None, extra_args=extra))
    return targets


MAX_DIRECTORY_FILES = 200
MAX_DIRECTORIES = 200


def check_text_inventory(path: str) -> None:
    """Refuse, in one InventoryError line, what Ansible should not be handed as an inventory: any file it
    would read (inventory_files) that is not readable UTF-8 text of at most safe_io.MAX_READ bytes (a FIFO
    or a device is refused unopened), and YAML beyond safe_io.check_yaml's bounds (an alias bomb, a deep
    nesting)."""
    from ..hostside.safe_io import UnsafeFile, UnsafeYaml, check_yaml, read_text

    for file in inventory_files(path):
        try:
            check_yaml(read_text(file))
        except (UnsafeFile, UnsafeYaml) as exc:
            raise InventoryError(f"--inventory {file}: {exc}") from None


def inventory_files(path: str) -> list[str]:
    """Every file Ansible may read for the inventory `path`, links followed as Ansible follows them: an
    inventory file, then what group_vars/ and host_vars/ beside it hold; or everything under a directory
    inventory (its group_vars/, host_vars/ and subdirectories). Hidden names are skipped, as Ansible skips
    them; anything else is listed whatever it is (a FIFO, a device, a dangling link), for the reader to
    refuse. InventoryError for a path that is neither a file nor a directory, a directory link loop, or
    more than MAX_DIRECTORY_FILES files or MAX_DIRECTORIES directories."""
    from ..hostside.safe_io import kind

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InventoryError(f"--inventory {path}: no such file") from None
    except OSError as exc:
        raise InventoryError(f"--inventory {path}: {exc.strerror or exc}") from None
    walk = _Walk(path)
    if stat.S_ISDIR(st.st_mode):
        walk.directory(path, frozenset())
        return walk.files
    if not stat.S_ISREG(st.st_mode):
        raise InventoryError(f"--inventory {path}: {kind(st.st_mode)}, not an inventory file")
    walk.files.append(path)
    here = os.path.dirname(os.path.abspath(path))
    for name in ("group_vars", "host_vars"):  # Ansible skips them, with a warning, when not directories
        if os.path.isdir(os.path.join(here, name)):
            walk.directory(os.path.join(here, name), frozenset())
    return walk.files


class _Walk:
    """The files under directories, links followed, bounded (inventory_files)."""

    def __init__(self, shown: str):
        self.shown = shown
        self.files: list[str] = []
        self.directories = 0

    def directory(self, top: str, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            st = os.stat(top)
            self.directories += 1
            if self.directories > MAX_DIRECTORIES:
                raise InventoryError(f"--inventory {self.shown}: more than {MAX_DIRECTORIES} directories to read")
            here = (st.st_dev, st.st_ino)
            if here in ancestors:  # Ansible would go round it until the path is too long
                raise InventoryError(f"--inventory {top}: a link back to a directory that contains it (a loop)")
            names: list[str] = []
            with os.scandir(top) as entries:
                for entry in entries:
                    if not entry.name.startswith("."):
                        names.append(entry.name)
                        if len(names) > MAX_DIRECTORY_FILES:
                            break
        except OSError as exc:
            raise InventoryError(f"--inventory {top}: {exc.strerror or exc}") from None
        for name in sorted(names):
            full = os.path.join(top, name)
            if os.path.isdir(full):
                self.directory(full, ancestors | {here})
                continue
            self.files.append(full)
            if len(self.files) > MAX_DIRECTORY_FILES:
                raise InventoryError(f"--inventory {self.shown}: more than {MAX_DIRECTORY_FILES} files to read")


def _load(path: str) -> Any:
    """Ansible's InventoryManager for `path`, its parse errors as one InventoryError line."""
    check_text_inventory(path)
    from .ansible_config import isolated

    noise = io.StringIO()  # Ansible's multi-line parse warnings: replaced by one line below
    with isolated():  # before Ansible's first import: it reads its configuration then
        from ansible.inventory.manager import InventoryManager  # heavy: only install pays for it
        from ansible.parsing.dataloader import DataLoader

        try:
            with contextlib.redirect_stderr(noise), contextlib.redirect_stdout(noise):
                manager = InventoryManager(loader=DataLoader(), sources=[os.path.abspath(path)])
        except Exception as exc:
            raise InventoryError(f"--inventory {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return manager


Reach = Any  # how doctor's checks read a host: None (this machine), "local", a testinfra URL, or an SshTarget


@dataclass(frozen=True)
class Hosts:
    """The hosts of one command (doctor, install, uninstall), resolved once by resolve_hosts: what the user
    named, every host that stands for, and how doctor's checks read each."""

    named: list[Target]  # the --host values: hosts and groups of the inventory, or ad-hoc logins
    names: list[str]  # every host the run touches, groups expanded, in order (each gets a summary row)
    reaches: list[Reach] | None  # how each of `names` is read; None when the inventory cannot say here
    inventory: Inventory | None = None

    @property
    def reached(self) -> list[tuple[str, Reach]]:
        """(name, how it is read) of every host; empty when the inventory cannot say how to read them."""
        return list(zip(self.names, self.reaches, strict=True)) if self.reaches is not None else []


def resolve_hosts(specs: Sequence[str], inventory: str | None = None, user: str | None = None,
                  doctor: bool = False) -> Hosts:
    """The --host values, checked (InventoryError) before any host is contacted, the inventory parsed once.
    `user`: the SSH user of hosts that name none (install's --user). `doctor`: testinfra URLs are targets too
    (--host podman://NAME), and connection variables that cannot be read are an error; install then runs its
    play without the survey (Ansible reads those variables itself)."""
    from ..targets.ssh import SshTarget

    parsed = Inventory(inventory) if inventory is not None else None
    named = resolve_targets(specs, parsed, user, urls=doctor)
    reaches: list[Reach] | None
    if parsed is not None:
        listed = [t.name for t in named]
        names = parsed.expand(listed)
        try:
            reaches = list(parsed.ssh_targets(listed))
        except InventoryError:
            if doctor:
                raise
            reaches = None
    else:
        names, reaches = [t.name for t in named], [t.reach() for t in named]
    if user is not None and reaches is not None:
        reaches = [dataclasses.replace(r, user=user) if isinstance(r, SshTarget) and r.user is None else r
                   for r in reaches]
    return Hosts(named, names, reaches, parsed)


def resolve_targets(specs: Sequence[str], inventory: str | Inventory | None = None,
                    user: str | None = None, urls: bool = False) -> list[Target]:
    """The --host values as Targets. With -i every --host must name a host or group of it (no host: all
    of them); without -i each is an ad-hoc SSH target (or, with `urls`, a testinfra URL), and no --host means
    this machine."""
    if user is not None:
        check_user(user)
    if inventory is not None:
        parsed = loaded(inventory)
        hosts, groups = parsed.names()
        chosen = list(specs) or ["all"]
        for name in chosen:
            if name not in hosts and name not in groups and name != "all":
                known = ", ".join([*groups, *hosts][:12])
                raise InventoryError(f"--host {name!r} is not a host or group of {parsed.path} (known: {known})")
        return [Target(name=name, spec=name, from_inventory=True) for name in dict.fromkeys(chosen)]
    return unique_names([_ad_hoc(spec, urls) for spec in specs] or [Target(name="localhost", spec="localhost")])


def _ad_hoc(spec: str, urls: bool) -> Target:
    if urls and "://" in spec:
        return Target(name=spec, spec=spec, url=check_url(spec))
    return parse_host(spec)


def unique_names(targets: Sequence[Target]) -> list[Target]:
    """One Target per login (the same user, address and port given twice, or this machine under both its
    names, is one host and runs once), each under a name no other has: a second login to one address
    (another user) is `NAME_2`, `NAME_3`... skipping the names other --host values have of their own, so
    `--host a@h --host b@h --host h_2` is h, h_3, h_2 and no host is left out or shown twice."""
    distinct: dict[tuple[Any, ...], Target] = {}
    for target in targets:
        distinct.setdefault((target.address, target.user, target.port, target.local, target.url), target)
    own = {t.name for t in distinct.values()}
    used: set[str] = set()
    unique: list[Target] = []
    for target in distinct.values():
        name, count = target.name, 1
        while name in used or (count > 1 and name in own):
            count += 1
            name = f"{target.name}_{count}"
        used.add(name)
        unique.append(dataclasses.replace(target, name=name))
    return unique


# ssh's configuration file for ssh_login_user (None: ssh's own default, the one Ansible's ssh reads).
SSH_CONFIG: str | None = None


def ssh_login_user(address: str, port: int | None = None) -> str | None:
    """The user ssh really logs in as for `address` (its `User` in ~/.ssh/config, else the local user),
    from `ssh -G`; None when ssh cannot tell. A root login needs no sudo, which a minimal host lacks."""
    argv = ["ssh", "-G", *(["-F", SSH_CONFIG] if SSH_CONFIG else []), *(["-p", str(port)] if port else []),
            "--", address]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines()[:1000] if out.returncode == 0 else ():
        key, _, value = line.partition(" ")
        if key == "user":
            return value.strip() or None
    return None


def build_inventory(targets: Sequence[Target], *, user: str | None = None, is_root: bool | None = None
                    ) -> dict[str, Any]:
    """A YAML/JSON inventory for ad-hoc targets (inventory-file targets are not included)."""
    from .ansible_data import Template  # yaml: kept off doctor's start-up path

    if is_root is None:
        is_root = os.geteuid() == 0
    hosts: dict[str, dict[str, Any]] = {}
    for target in targets:
        if target.from_inventory:
            continue
        if target.local:
            # The controller's Python has every module dependency Ansible needs; as root there is
            # nothing to become (and a minimal host may have no sudo at all).
            host_vars: dict[str, Any] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": Template("{{ ansible_playbook_python }}"),
                "ansible_become": not is_root,
            }
            if not is_root:
                host_vars["ansible_become_method"] = "sudo"
        else:
            host_vars = {"ansible_host": target.address, "ansible_connection": "ssh"}
            if target.port:
                host_vars["ansible_port"] = target.port
            remote_user = target.user or user
            if remote_user:
                host_vars["ansible_user"] = remote_user
            if (remote_user or ssh_login_user(target.address or target.name, target.port)) == "root":
                host_vars["ansible_become"] = False
        hosts[target.name] = host_vars
    return {"all": {"hosts": hosts}}


def write_inventory(directory: Path, inventory: dict[str, Any]) -> Path:
    """Write the generated inventory into the private run directory, as YAML whose strings are all
    `!unsafe` (a host address or user name is data, never templated) but our own Template values."""
    from .ansible_data import to_yaml

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "hosts.yml"
    path.write_text(to_yaml(inventory), encoding="utf-8")
    return path
