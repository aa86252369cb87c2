"""Exclusive locks on files beside what netspec writes, so two processes never write the same
thing at once: a data folder (`netspec data get`) and a snapshot prefix (`netspec train`).

flock locks end with their process, so a killed run never leaves one held. Temporary files
netspec makes carry its mark and the owner's pid (`temp_name`), so a later run removes only
its own kind, and only those whose process is gone."""
from __future__ import annotations

import os
import re

try:
    import fcntl
except ImportError:  # (Windows: no flock; the locks do nothing there)
    fcntl = None

MARK = ".netspec-"


class Lock:
    """An exclusive lock on `path` (created if missing), holding the owner's pid."""

    def __init__(self, path: str):
        self.path, self.fd = path, None

    def acquire(self, wait: bool = True) -> bool:
        """Take the lock (waiting for it, or False at once when another process holds it).
        The holder removes the file when it lets go, so a lock taken on a file that was just
        removed is retried on the new one."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    os.close(fd)
                    return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def owner(self) -> str:
        """The pid written by whoever holds the lock ('?' if unknown)."""
        try:
            with open(self.path) as f:
                return f.read().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        """Remove the file, then let go (closing ends the flock): nothing is left behind."""
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def temp_name(path: str) -> tuple[str, str]:
    """(prefix, suffix) for tempfile.mkstemp beside `path`: hidden, netspec's mark, this
    process's pid, so stale_temps can tell which are netspec's and whose process is gone."""
    return f".{os.path.basename(path)}{MARK}{os.getpid()}-", ".tmp"


_TEMP = re.compile(r"^\.(?P<name>.+)" + re.escape(MARK) + r"(?P<pid>\d+)-[^/]*\.tmp$")


def stale_temps(folder: str, name_prefix: str) -> list[str]:
    """netspec's temporary files in `folder` for files whose names start with `name_prefix`,
    left by processes that no longer run (a kill -9 mid-write)."""
    out = []
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return out
    for name in names:
        m = _TEMP.match(name)
        if m and m["name"].startswith(name_prefix) and not _alive(int(m["pid"])):
            out.append(os.path.join(folder, name))
    return out


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
