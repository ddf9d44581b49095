"""Where decision-log lines go: stdout, or a file rotated by size."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
from collections import deque
from typing import Protocol

from pep.config import DecisionLogConfig
from pep.errors import ConfigError

log = logging.getLogger(__name__)

_CHUNK_BYTES = 256 * 1024  # bytes per write call


class Sink(Protocol):
    def write(self, lines: deque[bytes]) -> None:
        """Write `lines` in order, taking each off the deque; raise OSError when stuck."""

    def drop(self) -> int:
        """Forget anything taken but not written; return how many lines that was."""

    def reset(self) -> None:
        """After a failure: reopen on the next write."""

    def sync(self) -> None:
        """What was written is on the disk (`decision_log.sync: fsync`); raise OSError if not."""

    def close(self) -> None: ...


class StdoutSink:
    def write(self, lines: deque[bytes]) -> None:
        out = sys.stdout
        out.write(b"".join(lines).decode())
        out.flush()
        lines.clear()

    def drop(self) -> int:
        return 0

    def reset(self) -> None:
        pass

    def sync(self) -> None:
        _fsync(sys.stdout.fileno())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()


class FileSink:
    """Appends to `path`; a regular file is rotated by size (`path.1` .. `path.N`).

    Writes go straight to the file descriptor, whole chunks of whole lines. A chunk cut
    short by an error is finished first on the next write, so a retry never writes a
    line twice or half.
    """

    def __init__(self, path: str, max_bytes: int = 0, backups: int = 0, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync  # a file rotated away is synced before it is closed
        self._max_bytes = max_bytes
        self._backups = backups
        self._fd: int | None = None
        self._size: int | None = None  # None: not a regular file (a pipe, a device): never rotated
        self._rest: memoryview | None = None  # the unwritten tail of the current chunk
        self._chunk_len = self._chunk_lines = 0
        self._torn = False  # a chunk was dropped half written: start with a fresh line
        try:
            self._open()
        except OSError as e:
            raise ConfigError("decision_log.sink", f"cannot open {path}: {e.strerror or e}") from None

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Non-blocking open: a FIFO without a reader fails rather than hangs; writes block.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o640)
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        self._size = st.st_size if stat.S_ISREG(st.st_mode) else None
        self._fd = fd

    def write(self, lines: deque[bytes]) -> None:
        while self._rest is not None or lines:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            if self._rest is None:
                chunk, self._chunk_lines = self._next_chunk(lines)
                self._rest, self._chunk_len = memoryview(chunk), len(chunk)
            n = os.write(self._fd, self._rest)
            if self._size is not None:
                self._size += n
            self._rest = self._rest[n:] if n < len(self._rest) else None

    def _next_chunk(self, lines: deque[bytes]) -> tuple[bytes, int]:
        room = _CHUNK_BYTES
        if self._max_bytes and self._size is not None:
            if self._size > 0 and self._size + len(lines[0]) > self._max_bytes:
                self._rotate()
            room = min(room, self._max_bytes - (self._size or 0))
        parts = [b"\n", lines.popleft()] if self._torn else [lines.popleft()]
        self._torn = False
        n = sum(map(len, parts))
        while lines and n + len(lines[0]) <= room:
            line = lines.popleft()
            parts.append(line)
            n += len(line)
        return b"".join(parts), len(parts) - parts.count(b"\n")

    def _rotate(self) -> None:
        if self._fsync:
            self.sync()
        self._close_fd()
        path, n = self.path, self._backups
        with contextlib.suppress(FileNotFoundError):
            if n > 0:
                for i in range(n - 1, 0, -1):
                    if os.path.exists(f"{path}.{i}"):
                        os.replace(f"{path}.{i}", f"{path}.{i + 1}")
                os.replace(path, f"{path}.1")
            else:
                os.remove(path)
        self._open()

    def drop(self) -> int:
        if self._rest is None:
            return 0
        # Part of the chunk written: its last line is cut, so the next one starts afresh.
        self._torn = len(self._rest) < self._chunk_len
        self._rest = None
        return self._chunk_lines

    def reset(self) -> None:
        self._close_fd()

    def sync(self) -> None:
        if self._fd is not None:
            _fsync(self._fd)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._close_fd()


def open_sink(cfg: DecisionLogConfig) -> Sink:
    if cfg.sink == "stdout":
        return StdoutSink()
    return FileSink(cfg.sink, cfg.max_bytes, cfg.backups, fsync=cfg.sync == "fsync")


def _fsync(fd: int) -> None:
    """fsync, where the descriptor can be synced: a pipe or terminal has no disk to reach."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
            raise
