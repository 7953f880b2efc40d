"""Files a user names are data: read with a size bound, written only over what they expect.

* `read_text` reads a regular file of at most MAX_READ bytes as UTF-8: /dev/zero, a FIFO, a
  directory, a 10 GB log or a binary file is one line of error, never a hang, a MemoryError or a
  UnicodeDecodeError traceback.
* `write_output` writes atomically (temporary file renamed over the target), and only over a regular
  file when asked (`force`), through a symlink only when asked (`follow_symlinks`): renaming over a
  FIFO, a device or a link would replace it with a regular file.
* `check_yaml` bounds what YAML text stands for before anything loads it: an alias bomb or a deep
  nesting is one line of error, never minutes of expansion or a RecursionError. Inventories (-i) and
  `--set` values go through it alike.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import Any

# An Alumet configuration or an inventory is a few KB: 1 MiB leaves plenty of room.
MAX_READ = 1 << 20

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


# Values YAML text may stand for once its aliases are expanded: a real inventory has hundreds or a few
# thousand; a "billion laughs" alias bomb of a few hundred bytes stands for billions, which PyYAML and
# Ansible's loader expand (neither has a limit of its own) until memory runs out.
MAX_YAML_NODES = 500_000
# Nesting: PyYAML builds a document recursively (two frames a level), so a few hundred '[' are a
# RecursionError; no inventory or setting nests anywhere near this deep.
MAX_YAML_DEPTH = 100


class UnsafeFile(ValueError):
    """A file that cannot be read or written as asked. The text is one line, without the path."""


class UnsafeYaml(ValueError):
    """YAML text too large once expanded, or nested too deep, to be loaded. The text is one line."""


def kind(mode: int) -> str:
    """'a FIFO', 'a directory'... for a st_mode that is not a regular file."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _os_error(exc: OSError) -> UnsafeFile:
    if isinstance(exc, FileNotFoundError):
        return UnsafeFile("no such file")
    if isinstance(exc, PermissionError):
        return UnsafeFile("permission denied")
    return UnsafeFile(exc.strerror or str(exc))


def is_utf8(text: str) -> bool:
    """False for a string holding bytes that were not UTF-8: Python hands such bytes of a command line
    over as lone surrogates, which no file, YAML or TOML can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_bytes(path: str, limit: int = MAX_READ) -> bytes:
    """At most `limit` bytes of a regular file, or UnsafeFile saying why not."""
    try:
        st = os.stat(path)  # a device is refused unopened: opening some has effects of its own
    except OSError as exc:
        raise _os_error(exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{kind(st.st_mode)}, not a regular file")
    try:
        # O_NONBLOCK: opening a FIFO (put there since the stat) must not wait for a writer; fstat refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(f"too large ({st.st_size} bytes; at most {limit})")
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while total <= limit:  # the size may have grown since fstat: the bound is on what is read
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnsafeFile(f"too large (more than {limit} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise _os_error(exc) from None
    finally:
        os.close(fd)


def read_text(path: str, limit: int = MAX_READ) -> str:
    """A regular file of at most `limit` bytes, as UTF-8 text without NUL bytes, or UnsafeFile."""
    data = read_bytes(path, limit)
    nul = data.find(b"\0")
    if nul >= 0:
        raise UnsafeFile(f"not a text file (NUL byte at offset {nul})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFile(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def write_output(path: str, text: str, *, force: bool = False, follow_symlinks: bool = False) -> str:
    """Write `text` to `path` atomically; returns the path written (a symlink's target when followed).

    Refused (UnsafeFile): a symlink unless `follow_symlinks`, anything but a regular file, and an
    existing file unless `force`. A replaced file keeps its permission bits; a new one gets 0644.
    """
    target = path
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _os_error(exc) from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        if not follow_symlinks:
            raise UnsafeFile("a symbolic link: not replaced (--follow-symlink writes to its target)")
        target = os.path.realpath(path)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _os_error(exc) from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{kind(st.st_mode)}: only a regular file or a new path is written")
        if not force:
            raise UnsafeFile("already exists (--force replaces it)")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".alumet-setup.", dir=directory)
    except OSError as exc:
        raise _os_error(exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        if st is None:
            # A new path stays new: link() fails if something appeared there meanwhile.
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise UnsafeFile("appeared while writing: not replaced") from None
            except OSError:  # a file system without hard links: a plain rename then
                os.replace(tmp, target)
            else:
                os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        raise _os_error(exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def check_yaml(text: str, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH) -> None:
    """UnsafeYaml when `text`, its aliases expanded, stands for more than `max_nodes` values or nests
    deeper than `max_depth`. Counted from the event stream, which never expands an alias and does not
    recurse: each alias counts as the size of its anchor's node. Text that is not YAML passes (INI, or
    a syntax error its loader reports)."""
    import yaml

    sizes: dict[str, int] = {}  # anchor -> size of its node
    stack: list[list[Any]] = [[None, 0]]  # open collections: [anchor, size so far]; [0] is the stream
    total = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append([event.anchor, 1])
                if len(stack) - 1 > max_depth:
                    raise UnsafeYaml(f"YAML nested deeper than {max_depth} levels: not loaded")
                total += 1
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, size = stack.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
                total += 1
            elif isinstance(event, yaml.AliasEvent):
                if any(entry[0] == event.anchor for entry in stack):
                    raise UnsafeYaml(f"YAML alias *{event.anchor} inside the node it names (a loop): not loaded")
                anchor, size = None, sizes.get(event.anchor, 1)
                total += size
            else:
                continue
            if anchor:
                sizes[anchor] = size
            stack[-1][1] += size
            if total > max_nodes:
                raise UnsafeYaml(f"its YAML aliases expand to more than {max_nodes} values (an alias bomb?): "
                                 "not loaded")
    except yaml.YAMLError:
        return


def load_yaml(text: str, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH) -> Any:
    """yaml.safe_load within check_yaml's bounds: UnsafeYaml beyond them or for a value Python cannot hold,
    yaml.YAMLError for bad YAML."""
    import yaml

    check_yaml(text, max_nodes, max_depth)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except ValueError as exc:  # int() of more digits than sys.get_int_max_str_digits() allows
        raise UnsafeYaml(f"a value Python cannot read ({str(exc).split(';')[0]})") from None
