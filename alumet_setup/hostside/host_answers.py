"""How doctor reads a host: the answer to each question a check may ask (read a file, stat, list, run a
command, ...). Standard library only, Python 3.8 and later: this file also runs on the hosts doctor reads.

LocalHost (hosts.py) answers with these functions on this machine. For a remote host, the controller sends
this file's source and a batch of questions in one command (`python3 -c SOURCE QUESTIONS`,
batched_host.py), or, over ssh, runs it once and writes one batch per line (ssh.py); it gets every answer
of a batch back at once, encoded as JSON:
  bytes -> {"bytes": base64}   stat -> {"stat": {...}}   command -> {"command": {"rc", "stdout", "stderr"}}
  a function called here -> {"called": its JSON-able value}
  an error a check handles -> {"raises": "PermissionError" | "OSError", "message": ...}
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zlib

COMMAND_NOT_FOUND = 127  # as a shell answers for a missing program
MAX_ANSWER = 1 << 20  # bytes of one file, or of one command's stdout or stderr, that are kept
_KINDS = {0o040000: "dir", 0o100000: "file", 0o120000: "link"}


def read_bytes(path: str):  # -> bytes | None
    """A regular file's first MAX_ANSWER bytes; None when there is none. A FIFO, device or directory reads as
    absent: opened without blocking and checked before any read, so a FIFO where a file is expected (a
    sysctl.d/*.conf, the agent's config) cannot hold doctor, and nothing can swap one in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if os.fstat(fd).st_mode & 0o170000 != 0o100000:
            return None
        os.set_blocking(fd, True)  # procfs and sysfs files read as usual
        chunks, left = [], MAX_ANSWER
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def listdir(path: str) -> list:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def stat(path: str, follow: bool = True):  # -> dict | None, FileStat's fields
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    kind = _KINDS.get(st.st_mode & 0o170000, "other")
    return {"mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "size": st.st_size, "kind": kind}


def readlink(path: str):  # -> str | None
    try:
        return os.readlink(path)
    except OSError:
        return None


def getxattr(path: str, name: str):  # -> bytes | None
    try:
        return os.getxattr(path, name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (61, 95):  # ENODATA: no such attribute; EOPNOTSUPP: fs without xattrs
            return None
        raise


def run(argv: list, timeout: float = 10.0, env=None, cwd=None) -> tuple:
    """(rc, stdout, stderr); 127 when the program is missing, 124 when it outlived `timeout`."""
    full_env = dict(os.environ, **env) if env else None
    try:
        # Its own session: on timeout the whole process group is killed, so a child that keeps the
        # output pipes open (`sh -c 'sleep 600 & ...'`) cannot keep us reading for ever.
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    except FileNotFoundError:
        return COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found"
    except PermissionError as exc:
        return 126, "", str(exc)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        return 124, "", f"{argv[0]}: timed out after {timeout:g}s"

    def text(data: bytes) -> str:
        return data[:MAX_ANSWER].decode("utf-8", "replace")

    return proc.returncode, text(stdout), text(stderr)


def run_in_tmpdir(prefix: str, files: dict, argv: list, timeout: float, read: list) -> dict:
    """`argv` run in a new private directory (`prefix` + random characters, mode 0700) that holds `files`
    (name -> text), then the files named in `read` read back (None: absent); the directory is removed
    whatever happens. One question for what takes several steps in order (doctor --probe's agent run)."""
    import tempfile

    directory = tempfile.mkdtemp(prefix=os.path.basename(prefix), dir=os.path.dirname(prefix) or None)
    try:
        for name, text in files.items():
            with open(os.path.join(directory, os.path.basename(name)), "w", encoding="utf-8") as handle:
                handle.write(text)
        rc, stdout, stderr = run(argv, timeout, cwd=directory)
        found = {}
        for name in read:
            data = read_bytes(os.path.join(directory, os.path.basename(name)))
            found[name] = None if data is None else data.decode("utf-8", "replace")
        return {"rc": rc, "stdout": stdout, "stderr": stderr, "files": found, "dir": directory}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def call(name: str, source: str, function: str):
    """`function()` of a standard-library program (its `source`, loaded as module `name`), called in this process:
    for what must run as the user that reads the host, without starting a python3 of its own (doctor's perf
    probe as that user: two python3 starts a host less). Any exception it raises comes back as an OSError."""
    namespace: dict = {"__name__": name}
    try:
        exec(compile(source, name, "exec"), namespace)
        return namespace[function]()
    except OSError:
        raise
    except Exception as exc:  # the program's own failure: the check reports it, the other answers go on
        raise OSError(f"{name}.{function}: {type(exc).__name__}: {exc}") from None


def which(command: str, extra_dirs: list, path_env: str):  # -> str | None
    """PATH first, then `extra_dirs` (`~` and `$HOME` expanded)."""
    found = shutil.which(command, path=path_env)
    if found:
        return found
    for directory in extra_dirs:
        candidate = os.path.join(os.path.expanduser(os.path.expandvars(directory)), command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def answer(op: str, args: list):
    """One question, answered and encoded for JSON."""
    try:
        if op == "read_bytes":
            value = read_bytes(args[0])
        elif op == "exists":
            return os.path.lexists(args[0])
        elif op == "listdir":
            return listdir(args[0])
        elif op == "stat":
            found = stat(args[0], args[1])
            return None if found is None else {"stat": found}
        elif op == "readlink":
            return readlink(args[0])
        elif op == "realpath":
            return os.path.realpath(args[0])
        elif op == "getxattr":
            value = getxattr(args[0], args[1])
        elif op == "run":
            rc, stdout, stderr = run(args[0], args[1], args[2])
            return {"command": {"rc": rc, "stdout": stdout, "stderr": stderr}}
        elif op == "which":
            return which(args[0], args[1], os.environ.get("PATH", os.defpath))
        elif op == "run_in_tmpdir":
            return {"tmprun": run_in_tmpdir(*args)}
        elif op == "call":
            return {"called": call(*args)}
        else:
            return {"raises": "OSError", "message": f"unknown question {op!r}"}
    except PermissionError as exc:
        return {"raises": "PermissionError", "message": str(exc)}
    except OSError as exc:
        return {"raises": "OSError", "message": str(exc)}
    return None if value is None else {"bytes": base64.b64encode(value).decode()}


def pack(questions: list) -> str:
    """[[key, op, args], ...] -> the command-line argument main() reads."""
    return base64.b64encode(zlib.compress(json.dumps(questions).encode(), 6)).decode()


WAITS = ("run", "run_in_tmpdir", "call")  # questions that run something: they may take seconds


def answer_all(questions: list) -> dict:
    """{key: encoded answer} for a batch of [key, op, args] questions. What runs something gets a thread each (a
    probe waits for seconds, the others answer meanwhile); reads are answered here, in microseconds each."""
    answers = {}

    def one(question: list) -> None:
        try:
            answers[question[0]] = answer(question[1], question[2])
        except Exception as exc:  # a malformed question: its own error, never a batch without its answer
            answers[question[0]] = {"raises": "OSError", "message": f"{question[1]}: {type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=one, args=(q,)) for q in questions if q[1] in WAITS]
    for thread in threads:
        thread.start()
    for question in questions:
        if question[1] not in WAITS:
            one(question)
    for thread in threads:
        thread.join()
    return answers


def unpack(packed) -> list:  # str or bytes, as pack() wrote it
    return json.loads(zlib.decompress(base64.b64decode(packed)))


def main() -> None:
    """`SOURCE PACKED`: answer that batch on stdout. `SOURCE` alone: serve, one packed batch per line of stdin,
    one line of JSON answers each, until stdin ends (an ssh session of a whole doctor run, ssh.py)."""
    if len(sys.argv) > 1:
        sys.stdout.write(json.dumps(answer_all(unpack(sys.argv[1]))))
        return
    for line in sys.stdin.buffer:
        sys.stdout.write(json.dumps(answer_all(unpack(line.strip()))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
