"""Caffe's (glog's) log line format, so that Caffe's log parsers read netspec's logs."""
from __future__ import annotations

import errno
import logging
import os
import sys
import time

from .errors import NetspecError

logger = logging.getLogger("netspec")


class GlogFormatter(logging.Formatter):
    """`I1123 07:51:11.123456 12345 solver.py:0] message`, as glog writes."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        micros = int((record.created % 1) * 1e6)
        return (f"{record.levelname[0]}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} {record.process} "
                f"{record.module}.py:{record.lineno}] {record.getMessage()}")


class _StderrUntilConfigured(logging.StreamHandler):
    """pycaffe prints Caffe's log to stderr by default, and so does netspec used as a library
    (`solver.solve()` in a script) until the application sets up logging itself (a handler on
    the root logger) or calls `configure`. Quiet it with
    `logging.getLogger("netspec").setLevel(logging.WARNING)`."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def _default_handler() -> None:
    handler = _StderrUntilConfigured(sys.stderr)
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def configure(level: int = logging.INFO, stream=None, log_file: str | None = None,
              stream_level: int | None = None) -> None:
    """Send netspec's log lines to `stream` (stdout by default; only from `stream_level` up,
    when a progress bar shows the rest) and, all of them, to `log_file`."""
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    console = logging.StreamHandler(stream or sys.stdout)
    console.setLevel(stream_level or level)
    handlers = [console]
    if log_file:
        handlers.append(logging.StreamHandler(_append_to(log_file)))
    for h in handlers:
        h.setFormatter(GlogFormatter())
        logger.addHandler(h)


#: glog's severities, as pycaffe's init_log(level) numbers them
GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def init_log(level: int = 0, stderr: bool = True) -> None:
    """pycaffe's caffe.init_log: log from glog severity `level` (0 INFO ... 3 FATAL) on, to
    stderr (or stdout with stderr=False)."""
    if level not in GLOG_LEVELS:
        raise ValueError(f"level must be 0 (INFO) to 3 (FATAL), got {level!r}")
    configure(GLOG_LEVELS[level], sys.stderr if stderr else sys.stdout)


def log(message: str) -> None:
    """pycaffe's caffe.log: one INFO line in Caffe's format."""
    logger.info("%s", message)


_default_handler()


def _append_to(path: str):
    """The log file, opened to append, never through a symbolic link (a link planted where the
    log goes would have netspec write into its target)."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                     0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NetspecError(f"--log {path} is a symbolic link: netspec does not write "
                               f"through links (give the file itself)") from None
        raise NetspecError(f"cannot write the log {path}: {e.strerror or e}") from None
    return os.fdopen(fd, "a", buffering=1)
