"""The decision log: one JSON line per decision, written off the request path.

`record` only enqueues; a writer thread formats and writes. A full queue drops the
entry and counts it, so the log can never slow or stop decisions (unless the operator
asks for `decision_log.required`, which the authorizer enforces).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import sys
import threading
from typing import IO, Any

from pep.config import DecisionLogConfig
from pep.decision import Decision
from pep.metrics import Metrics

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)
_STOP = object()


def log_entry(d: Decision) -> dict[str, Any]:
    """The decision as a log object (SPEC 4 fields). Never the token, proof or a key."""
    entry: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "ts": dt.datetime.fromtimestamp(d.ts, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
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
    if d.traceparent:
        entry["traceparent"] = d.traceparent
    if d.shadow_diverged and d.shadow is not None:
        entry["shadow"] = {
            "decision": "allow" if d.shadow.allowed else "deny",
            "reason": d.shadow.reason.value,
            "policies": list(d.shadow.policies),
            "errors": list(d.shadow.errors),
        }
    return entry


class _Sink:
    """stdout, or a file rotated by size (`path`, `path.1`, ... `path.N`)."""

    def __init__(self, cfg: DecisionLogConfig) -> None:
        self._cfg = cfg
        self._file: IO[str] | None = None
        if cfg.sink != "stdout":
            self._open()

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self._cfg.sink)), exist_ok=True)
        self._file = open(self._cfg.sink, "a", encoding="utf-8")

    def write(self, line: str) -> None:
        if self._file is None:
            sys.stdout.write(line)
            return
        if self._cfg.max_bytes and self._file.tell() + len(line) > self._cfg.max_bytes:
            self._rotate()
        self._file.write(line)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        path, n = self._cfg.sink, self._cfg.backups
        if n > 0:
            for i in range(n - 1, 0, -1):
                if os.path.exists(f"{path}.{i}"):
                    os.replace(f"{path}.{i}", f"{path}.{i + 1}")
            os.replace(path, f"{path}.1")
        else:
            os.remove(path)
        self._open()

    def flush(self) -> None:
        (self._file or sys.stdout).flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


class DecisionLog:
    def __init__(self, cfg: DecisionLogConfig, metrics: Metrics) -> None:
        self._cfg = cfg
        self._metrics = metrics
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_size)
        self._sink = _Sink(cfg)
        self._thread = threading.Thread(target=self._run, name="pep-decision-log", daemon=True)
        self._closed = False
        self._thread.start()

    def record(self, decision: Decision) -> bool:
        if self._closed:
            self._metrics.log_dropped.inc()
            return False
        try:
            self._queue.put_nowait(decision)
            return True
        except queue.Full:
            self._metrics.log_dropped.inc()
            return False

    def write_event(self, event: dict[str, Any]) -> bool:
        """A non-decision entry (admin actions) in the same stream."""
        try:
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            self._metrics.log_dropped.inc()
            return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            # Drain what is already waiting so one flush covers many lines.
            while len(batch) < 512:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._write(batch)
                    return
                batch.append(nxt)
            self._write(batch)

    def _write(self, batch: list[Any]) -> None:
        try:
            lines = []
            for item in batch:
                entry = log_entry(item) if isinstance(item, Decision) else item
                lines.append(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
            self._sink.write("".join(lines))
            self._sink.flush()
        except Exception:
            log.exception("decision log write failed; %d entries lost", len(batch))
            self._metrics.log_dropped.inc(len(batch))

    def close(self, timeout: float = 5.0) -> None:
        """Flush everything queued, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._sink.close()


class DecisionRecorder:
    """Log and count each decision: the authorizer's single side output."""

    def __init__(self, metrics: Metrics, decision_log: DecisionLog | None) -> None:
        self._metrics = metrics
        self._log = decision_log

    def record(self, decision: Decision) -> bool:
        try:
            m = self._metrics
            m.decisions.labels(
                "allow" if decision.allowed else "deny",
                decision.reason.value,
                m.action_label(decision.action),
            ).inc()
            m.decision_duration.observe(decision.duration_us / 1e6)
            if decision.shadow_diverged:
                m.shadow_divergences.labels(m.action_label(decision.action)).inc()
            return self._log.record(decision) if self._log is not None else True
        except Exception:
            log.exception("could not record a decision")
            return False
