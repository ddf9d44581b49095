"""The decision log: one JSON line per decision, written off the request path.

`record` only enqueues; a writer thread formats and writes. In the default mode a full
queue or a failing sink drops entries and counts them (`pep_decision_log_dropped_total`),
so the log never slows or stops decisions. With `decision_log.required` an entry that
cannot be queued refuses the decision instead (the authorizer answers deny,
`internal_error`): the queue refuses while the sink is failing, and the writer keeps what
it already took and retries rather than dropping it.

An entry never holds the raw token, a DPoP proof or a key (a `Decision` does not carry
them), and the only claims it shows are `iss`, `jti`, `client_id`/`azp`, the scopes,
`sub` (as `on_behalf_of`) and the `act` chain; any of those named in
`decision_log.redact_claims` is written as "[redacted]".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import queue
import re
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from pep.config import DecisionLogConfig
from pep.decision import Decision
from pep.errors import ConfigError
from pep.metrics import Metrics
from pep.reasons import Reason

SCHEMA_VERSION = 1
REDACTED = "[redacted]"
log = logging.getLogger(__name__)

_WAKE = object()  # put on the queue by `close` so the writer notices at once
_BATCH = 512  # entries the writer takes per round
_LINGER = 0.005  # seconds the writer waits for a batch to gather
_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
_CHUNK_BYTES = 256 * 1024  # bytes per write call
_RETRY_MIN, _RETRY_MAX = 0.05, 1.0  # seconds between attempts on a failing sink (required mode)

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex only.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_LEN = 55

# Where each claim the log can show lands in an entry.
_CLAIM_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "iss": (("token", "iss"),),
    "jti": (("token", "jti"),),
    "client_id": (("token", "client_id"),),
    "azp": (("token", "client_id"),),
    "scope": (("token", "scopes"),),
    "scp": (("token", "scopes"),),
    "sub": (("on_behalf_of",),),
    "act": (("agent",), ("delegation_chain",)),
}


def valid_traceparent(value: str) -> str:
    """`value` when it is a well-formed W3C `traceparent`, else "": garbage is never logged.

    Version `ff` and all-zero ids are invalid. A later version may append fields after
    the flags; only the four known ones are kept.
    """
    m = _TRACEPARENT.match(value)
    if m is None:
        return ""
    version, trace_id, parent_id, _ = m.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return ""
    if len(value) == _TRACEPARENT_LEN:
        return value
    if version != "00" and value[_TRACEPARENT_LEN] == "-":
        return value[:_TRACEPARENT_LEN]
    return ""


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def utc_timestamp(ts: float) -> str:
    """RFC 3339 UTC with microseconds (`2026-01-31T12:00:00.123456Z`), the second cached."""
    micros = round(ts * 1_000_000)
    second, micro = divmod(micros, 1_000_000)
    return f"{_utc_second(second)}.{micro:06d}Z"


def redaction_paths(claims: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """The entry fields that show any of `claims`; other claims are never written at all."""
    return tuple(dict.fromkeys(path for claim in claims for path in _CLAIM_FIELDS.get(claim, ())))


def log_entry(d: Decision, redact: tuple[tuple[str, ...], ...] = ()) -> dict[str, Any]:
    """The decision as a log object (SPEC 4 fields). Never the token, proof or a key."""
    entry: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "ts": utc_timestamp(d.ts),
        "decision_id": d.decision_id,
        "request_id": d.request_id,
        "decision": "allow" if d.allowed else "deny",
        "reason": d.reason.value,
        "policies": list(d.policies),
        "errors": list(d.errors),
        "agent": d.agent,
        "on_behalf_of": d.on_behalf_of,
        "delegation_chain": list(d.delegation_chain),
        "action": d.action,
        "resource": {"type": d.resource_type, "id": d.resource_id},
        "token": {
            "iss": d.token.iss,
            "jti": d.token.jti,
            "client_id": d.token.client_id,
            "scopes": list(d.token.scopes),
        },
        "binding": d.binding,
        "policy_version": d.policy_version,
        "mode": d.mode,
        "duration_us": d.duration_us,
    }
    if d.answer_allowed != d.allowed:
        entry["answered"] = "allow" if d.answer_allowed else "deny"
    traceparent = valid_traceparent(d.traceparent) if d.traceparent else ""
    if traceparent:
        entry["traceparent"] = traceparent
    if d.shadow_diverged and d.shadow is not None:
        entry["shadow"] = {
            "decision": "allow" if d.shadow.allowed else "deny",
            "reason": d.shadow.reason.value,
            "policies": list(d.shadow.policies),
            "errors": list(d.shadow.errors),
        }
    if redact:
        _redact(entry, redact)
    return entry


def _redact(entry: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> None:
    secrets: list[str] = []
    for path in paths:
        parent = entry
        for key in path[:-1]:
            parent = parent[key]
        value = parent[path[-1]]
        if isinstance(value, list):
            secrets.extend(v for v in value if v)
            parent[path[-1]] = [REDACTED] if value else []
        elif value:
            secrets.append(value)
            parent[path[-1]] = REDACTED
    # Error texts may quote a value (a Cedar error names `User::"alice"`): scrub it there too.
    secrets.sort(key=len, reverse=True)
    errors = entry["errors"]
    for i, text in enumerate(errors):
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        errors[i] = text


class Sink(Protocol):
    def write(self, lines: deque[bytes]) -> None:
        """Write `lines` in order, taking each off the deque; raise OSError when stuck."""

    def drop(self) -> int:
        """Forget anything taken but not written; return how many lines that was."""

    def reset(self) -> None:
        """After a failure: reopen on the next write."""

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

    def close(self) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()


class FileSink:
    """Appends to `path`; a regular file is rotated by size (`path.1` .. `path.N`).

    Writes go straight to the file descriptor, whole chunks of whole lines. A chunk cut
    short by an error is finished first on the next write, so a retry never writes a
    line twice or half.
    """

    def __init__(self, path: str, max_bytes: int = 0, backups: int = 0) -> None:
        self.path = path
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
    return FileSink(cfg.sink, cfg.max_bytes, cfg.backups)


class DecisionLog:
    def __init__(self, cfg: DecisionLogConfig, metrics: Metrics, *, sink: Sink | None = None) -> None:
        self.required = cfg.required
        self._metrics = metrics
        self._redact = redaction_paths(cfg.redact_claims)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_size)
        self._sink = sink if sink is not None else open_sink(cfg)
        self._lock = threading.Lock()  # `close` against `record`: nothing is queued after the writer ends
        self._closed = False
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._healthy = True  # the last write succeeded
        metrics.watch_log_queue(self._queue.qsize, cfg.queue_size)
        self._thread = threading.Thread(target=self._run, name="pep-decision-log", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self._healthy

    def record(self, decision: Decision) -> bool:
        """Queue the decision; False (and counted as dropped) when it cannot be queued."""
        return self._put(decision)

    def write_event(self, event: dict[str, Any]) -> bool:
        """A non-decision entry (admin actions) in the same stream."""
        return self._put(event)

    def _put(self, item: Any) -> bool:
        with self._lock:
            if not self._closed and (self._healthy or not self.required):
                try:
                    self._queue.put_nowait(item)
                    return True
                except queue.Full:
                    pass
        self._metrics.log_dropped.inc()
        return False

    def _run(self) -> None:
        pending: deque[bytes] = deque()
        backoff = _RETRY_MIN
        failed_since: float | None = None
        dropped = 0
        while True:
            if not pending and not self._holding():
                items = self._take()
                if not items:
                    if self._stopping.is_set() and self._queue.empty():
                        return
                    continue
                pending.extend(self._format(items))
                if not pending:
                    continue
            try:
                self._sink.write(pending)
            except Exception as e:
                self._healthy = False
                self._sink.reset()
                if failed_since is None:
                    failed_since = time.monotonic()
                    log.error("decision log: cannot write to the sink: %s", e)
                if self.required and time.monotonic() < self._deadline:
                    # Keep what was taken; the queue refuses new entries until this clears.
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _RETRY_MAX)
                    continue
                lost = len(pending) + self._sink.drop()
                pending.clear()
                dropped += lost
                self._metrics.log_dropped.inc(lost)
                continue
            if failed_since is not None:
                log.warning(
                    "decision log: writing again after %.1fs; %d entries lost meanwhile",
                    time.monotonic() - failed_since,
                    dropped,
                )
            self._healthy, backoff, failed_since, dropped = True, _RETRY_MIN, None, 0

    def _holding(self) -> bool:
        return not self._healthy and self.required

    def _take(self) -> list[Any]:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        if first is not _WAKE and not self._stopping.is_set() and self._queue.qsize() < _BATCH:
            # Let a few milliseconds of entries gather: one wake-up, one write per batch
            # rather than per decision, so the writer seldom contends for the GIL.
            time.sleep(_LINGER)
        items = [first]
        while len(items) < _BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return [i for i in items if i is not _WAKE]

    def _format(self, items: list[Any]) -> list[bytes]:
        lines = []
        for item in items:
            try:
                entry = log_entry(item, self._redact) if isinstance(item, Decision) else item
                lines.append(_JSON.encode(entry).encode() + b"\n")
            except Exception:
                log.exception("decision log: an entry could not be formatted")
                self._metrics.log_dropped.inc()
        return lines

    def close(self, timeout: float = 5.0) -> None:
        """Write everything queued, then stop the writer (waits at most `timeout` seconds)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            log.error(
                "decision log: writer still blocked after %.1fs; %d entries unwritten", timeout, self._queue.qsize()
            )
            return
        self._sink.close()


class DecisionRecorder:
    """Count and log each decision: the authorizer's single side output."""

    def __init__(self, metrics: Metrics, decision_log: DecisionLog | None) -> None:
        self._metrics = metrics
        self._log = decision_log
        self._required = decision_log is not None and decision_log.required

    def record(self, decision: Decision) -> bool:
        try:
            m = self._metrics
            queued = self._log.record(decision) if self._log is not None else True
            allowed, reason = decision.allowed, decision.reason.value
            if not queued and self._required and decision.answer_allowed:
                # The authorizer refuses this one (deny, internal_error): count what was answered.
                allowed, reason = False, Reason.INTERNAL_ERROR.value
            m.count_decision("allow" if allowed else "deny", reason, decision.action, decision.duration_us / 1e6)
            if decision.shadow_diverged:
                m.shadow_divergences.labels(m.action_label(decision.action)).inc()
            return queued
        except Exception:
            log.exception("could not record a decision")
            return False
