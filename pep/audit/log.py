"""The decision log: one JSON line per decision, written off the request path.

`submit` only enqueues and answers with an acknowledgement; a writer thread formats and
writes. In the default mode a full queue or a failing sink drops entries and counts them
(`pep_decision_log_dropped_total`), so the log never slows or stops decisions. With
`decision_log.required` an allow's acknowledgement settles only once its entry has reached the
sink (`decision_log.sync`: handed to the operating system, or also fsynced), so a crash can
never erase an allow a caller was given. That is a group commit: the writer takes every entry
queued meanwhile and writes them in one call (and one fsync), so concurrent allows share the
wait. The pipeline refuses an allow whose entry was not written (deny, `internal_error`): the
queue refuses while the sink is failing, and the writer keeps what it already took and retries
rather than dropping it. With `decision_log.chain` every line is sealed into the hash chain of
pep/audit/chain.py as it is formatted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from typing import Any

import orjson

from pep.audit.chain import Chain, resume
from pep.audit.entry import inputs_policy, log_entry, redaction_paths, utc_timestamp
from pep.audit.sinks import Sink, open_sink
from pep.config import DecisionLogConfig
from pep.decision import UNLOGGED, Decision, unlogged
from pep.metrics import Metrics
from pep.reasons import Reason

log = logging.getLogger(__name__)

_WAKE = object()  # put on the queue by `close` so the writer notices at once
_BATCH = 512  # entries the writer takes per round
_LINGER = 0.005  # seconds the writer waits for a batch to gather
# orjson: the writer formats every decision and holds the GIL while it does. Lines stay ASCII
# (as json's ensure_ascii writes them): a rare entry with other characters is written by json,
# so no reader splitting on U+2028 or NEL ever cuts a line.
_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE
_ASCII = json.JSONEncoder(separators=(",", ":"), default=str)
_RETRY_MIN, _RETRY_MAX = 0.05, 1.0  # seconds between attempts on a failing sink (required mode)
# Required mode: how long an allow waits for its entry to be written before it is refused.
WRITE_WAIT_SECONDS = 5.0


class Taken:
    """An acknowledgement already settled: the entry was queued, or it never will be."""

    __slots__ = ("_taken",)

    def __init__(self, taken: bool) -> None:
        self._taken = taken

    def wait(self) -> bool:
        return self._taken


TAKEN, REFUSED = Taken(True), Taken(False)


class Pending:
    """Required mode: an allow's acknowledgement, settled by the writer once the entry is written.

    A caller that waited `WRITE_WAIT_SECONDS` gives up and is refused. If the writer had not
    formatted the entry yet, it writes the entry as refused (deny, `internal_error`); if the
    line was already on its way, it is followed by an `answered` event naming the decision,
    so the log never shows an allow as answered when its caller was refused.
    """

    __slots__ = ("_done", "_written", "abandoned", "decision_id")

    def __init__(self, decision_id: str) -> None:
        self._done = threading.Event()
        self._written = False
        self.abandoned = False  # the caller was refused: changed only under _SETTLING
        self.decision_id = decision_id

    def settle(self, written: bool) -> bool:
        """Tell the caller; False when it had already given up (refused)."""
        with _SETTLING:
            if self.abandoned:
                return False
            self._written = written
            self.abandoned = not written
        self._done.set()
        return True

    def wait(self) -> bool:
        if self._done.wait(WRITE_WAIT_SECONDS):
            return self._written
        with _SETTLING:
            if not self._done.is_set():
                self.abandoned = True
                return False
        return self._written


_SETTLING = threading.Lock()  # a caller giving up against the writer settling its acknowledgement


class DecisionLog:
    def __init__(self, cfg: DecisionLogConfig, metrics: Metrics, *, sink: Sink | None = None) -> None:
        self.required = cfg.required
        self._metrics = metrics
        self._redact = redaction_paths(cfg.redact_claims)
        self._inputs = inputs_policy(cfg.redact_context, cfg.max_inputs_bytes)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_size)
        self._sink = sink if sink is not None else open_sink(cfg)
        self._lock = threading.Lock()  # `close` against `record`: nothing is queued after the writer ends
        self._closed = False
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._healthy = True  # the last write succeeded
        self._fsync = cfg.sync == "fsync"
        self._chain: Chain | None = None
        if cfg.chain:
            self._chain = resume(cfg.sink, cfg.backups) if cfg.sink != "stdout" else Chain()
        metrics.watch_log_queue(self._queue.qsize, cfg.queue_size)
        self._thread = threading.Thread(target=self._run, name="pep-decision-log", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self._healthy

    def submit(self, decision: Decision) -> Taken | Pending:
        """Queue the decision's entry. The acknowledgement is False (and the entry counted as
        dropped) when it cannot be queued; in required mode an allow's waits for the write."""
        if self.required and decision.answer_allowed:
            pending = Pending(decision.decision_id)
            return pending if self._put((decision, pending)) else REFUSED
        return TAKEN if self._put(decision) else REFUSED

    def record(self, decision: Decision) -> bool:
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
        waiting: list[Pending] = []  # the acknowledgements of the lines in `pending`
        refused: list[str] = []  # decisions whose lines are on their way but whose callers were refused
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
                pending.extend(self._format(items, waiting))
                if not pending:
                    _settle(waiting, False, refused)
                    continue
            try:
                self._sink.write(pending)
                if self._fsync:
                    self._sink.sync()
            except Exception as e:
                self._healthy = False
                self._sink.reset()
                # The allows waiting on this write are refused now rather than held: what is
                # kept and retried below is followed by an `answered` event once written.
                _settle(waiting, False, refused)
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
            _settle(waiting, True, refused)
            if refused:
                pending.extend(self._format([_answered(refused)], waiting))
                refused = []
                continue  # written in the next round, before anything newer
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
        if first is not _WAKE and not self.required and not self._stopping.is_set() and self._queue.qsize() < _BATCH:
            # Let a few milliseconds of entries gather: one wake-up, one write per batch
            # rather than per decision, so the writer seldom contends for the GIL. Required
            # mode does not linger (allows wait on the write): entries queued while one batch
            # is written form the next.
            time.sleep(_LINGER)
        items = [first]
        while len(items) < _BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return [i for i in items if i is not _WAKE]

    def _format(self, items: list[Any], waiting: list[Pending]) -> list[bytes]:
        lines = []
        for item in items:
            ack = None
            if isinstance(item, tuple):
                item, ack = item
                with _SETTLING:
                    if ack.abandoned:  # its caller already gave up: log what it was answered
                        item, ack = unlogged(item), None
            try:
                entry = log_entry(item, self._redact, inputs=self._inputs) if isinstance(item, Decision) else dict(item)
                lines.append(self._chain.seal(entry, _encode) if self._chain is not None else _encode(entry))
            except Exception:
                log.exception("decision log: an entry could not be formatted")
                self._metrics.log_dropped.inc()
                if ack is not None:
                    ack.settle(False)
                continue
            if ack is not None:
                waiting.append(ack)
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


def _encode(entry: dict[str, Any]) -> bytes:
    line = orjson.dumps(entry, default=str, option=_JSON_OPTIONS)
    return line if line.isascii() else _ASCII.encode(entry).encode() + b"\n"


def _settle(waiting: list[Pending], written: bool, refused: list[str]) -> None:
    """Answer the callers; those refused while their lines are written go in `refused`."""
    for ack in waiting:
        if not ack.settle(written) or not written:
            refused.append(ack.decision_id)
    waiting.clear()


def _answered(decision_ids: list[str]) -> dict[str, Any]:
    """The event after lines whose callers were refused: they were answered deny, not allow."""
    return {
        "schema": 1,
        "ts": utc_timestamp(time.time()),
        "event": "answered",
        "decision_ids": decision_ids,
        "answered": "deny",
        "reason": Reason.INTERNAL_ERROR.value,
        "errors": [UNLOGGED],
    }
