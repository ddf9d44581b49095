"""Anomaly containment: what a rule that fired does, on a thread of its own.

Every firing is counted and written to the decision log (`"event": "anomaly"`); a `suspend`
rule also disables the agent through the kill switch (source `anomaly`, actor `anomaly`;
fleet-wide when the kill list is kept in Redis), written as an admin event like any other
flip, until `pep admin enable agent X` lifts it. The kill switch may wait on Redis or a
file, so none of this runs on the request path: `submit` only queues.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from pep.audit.entry import utc_timestamp
from pep.controls.anomaly import Firing
from pep.controls.killswitch import MAX_ENTRIES, RuntimeKills

log = logging.getLogger(__name__)

ACTOR = "anomaly"
# Firings waiting for the worker; each (agent, rule) fires at most once per window, so a
# full queue means thousands of agents at once: the rest are logged and counted, not acted on.
QUEUE_SIZE = 1_000
_STOP = None


def _now() -> str:
    return utc_timestamp(time.time())


class Containment:
    def __init__(
        self,
        kills: RuntimeKills,
        write_event: Callable[[dict[str, Any]], bool],
        counted: Callable[[str, str], None],
    ) -> None:
        self._kills = kills
        self._write_event = write_event
        self._counted = counted
        self._queue: queue.Queue[Firing | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="pep-anomaly", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def submit(self, firing: Firing) -> None:
        """Counted at once; the log lines and the kill switch follow on the worker."""
        self._counted(firing.rule.name, firing.rule.action)
        try:
            self._queue.put_nowait(firing)
        except queue.Full:
            log.error("anomaly: %s for agent %r not acted on (%d waiting)", firing.reason, firing.agent, QUEUE_SIZE)

    def close(self, timeout: float = 5.0) -> None:
        """Act on what is queued, then stop (before the decision log closes)."""
        if not self._started:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            firing = self._queue.get()
            if firing is _STOP:
                return
            try:
                self._act(firing)
            except Exception:
                log.exception("anomaly: acting on %s for agent %r failed", firing.rule.name, firing.agent)

    def _act(self, f: Firing) -> None:
        rule = f.rule
        log.warning("anomaly: rule %s fired for agent %r (%s): %s", rule.name, f.agent, rule.action, f.detail)
        self._write(
            {
                "schema": 1,
                "ts": _now(),
                "event": "anomaly",
                "agent": f.agent,
                "rule": rule.name,
                "kind": rule.kind,
                "action": rule.action,
                "detail": f.detail,
                "decision_id": f.decision_id,
            }
        )
        if rule.action != "suspend":
            return
        if len(self._kills.entries()) >= MAX_ENTRIES:
            log.error("anomaly: %d kill switch entries in force already; agent %r not suspended", MAX_ENTRIES, f.agent)
            changed = False
        else:
            changed = self._kills.disable("agent", f.agent, f.reason, ACTOR, source=ACTOR)
        self._write(
            {
                "schema": 1,
                "ts": _now(),
                "event": "admin",
                "action": "disable",
                "kind": "agent",
                "id": f.agent,
                "reason": f.reason,
                "actor": ACTOR,
                "source": ACTOR,
                "rule": rule.name,
                "changed": changed,
                "scope": self._kills.scope,
            }
        )

    def _write(self, event: dict[str, Any]) -> None:
        if not self._write_event(event):
            log.error("anomaly event could not be written to the decision log: %s", event)
