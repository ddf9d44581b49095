"""Anomaly detection: rules over each agent's recent decisions (`anomaly.rules`).

`Detector.observe` sees every recorded decision of an agent (the current actor) on the
request path, so it does little: per agent and windowed rule a ring of at most MAX_BUCKETS
time buckets with running totals (a decision adds to one bucket; buckets that slid out of
the window are subtracted as time moves on), and per agent the set of actions it was
allowed. A rule that fires is handed to `on_fire` (pep.controls.containment, which does the
slow part on its own thread).

What counts:
- decisions denied `agent_disabled` or `agent_expired` count for no rule: they are
  containment already in force (a suspended agent's denies never fire again);
- `deny_ratio` also leaves out `rate_limited` (its pace is the rate limits' business) and
  pep's own faults (`internal_error`, `policy_unavailable`);
- `new_action` learns the actions an agent is allowed for `learning_seconds` after the first
  decision this process saw of it, then fires once for each action allowed for the first time.

After a windowed rule fires for an agent its window starts afresh and the rule stays quiet
for one window, so it fires at most once per window and agent. A `suspend` stops every rule
for the agent until `release` (the kill switch lifted it), which starts its windows afresh.
State is per process and bounded: MAX_AGENTS agents (least recently seen dropped first),
MAX_ACTIONS learned actions per agent.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pep.config import AnomalyRule
from pep.decision import Decision
from pep.reasons import Reason

log = logging.getLogger(__name__)

MAX_AGENTS = 10_000
MAX_BUCKETS = 60
MAX_ACTIONS = 1_000

_CONTAINED = frozenset({Reason.AGENT_DISABLED, Reason.AGENT_EXPIRED})
_NOT_RATIO = _CONTAINED | {Reason.RATE_LIMITED, Reason.INTERNAL_ERROR, Reason.POLICY_UNAVAILABLE}


@dataclass(frozen=True)
class Firing:
    """A rule that fired for an agent, with the figures that made it fire."""

    rule: AnomalyRule
    agent: str
    detail: str
    # The decision that made it fire.
    decision_id: str = ""

    @property
    def reason(self) -> str:
        return f"anomaly {self.rule.name}: {self.detail}"


def _zeros(n: int) -> array[int]:
    return array("I", [0]) * n  # 4 bytes a bucket, half a list's


class _Window:
    """One agent's counts for one windowed rule: buckets, the bucket number last written, totals."""

    __slots__ = ("counts", "denied", "denies", "head", "quiet_until", "total")

    def __init__(self, buckets: int, head: int, denies: bool) -> None:
        self.head = head
        self.counts = _zeros(buckets)
        self.denies = _zeros(buckets) if denies else None
        self.total = 0
        self.denied = 0
        self.quiet_until = 0.0


class _Windowed:
    """A `deny_ratio` or `rate` rule: `window_seconds` in `buckets` buckets of `width` seconds."""

    def __init__(self, rule: AnomalyRule) -> None:
        self.rule = rule
        self.ratio = rule.kind == "deny_ratio"
        self.buckets = min(rule.window_seconds, MAX_BUCKETS)
        self.width = rule.window_seconds / self.buckets
        # rate: more than this many decisions in the window
        self.limit = rule.threshold * rule.window_seconds

    def new(self, now: float) -> _Window:
        return _Window(self.buckets, int(now / self.width), self.ratio)

    def add(self, w: _Window, now: float, denied: bool) -> str | None:
        """Count one decision at `now`; the figures when the rule fires."""
        b = int(now / self.width)
        if b > w.head:
            self._slide(w, b)
        i = w.head % self.buckets  # a clock that went back counts in the newest bucket
        w.counts[i] += 1
        w.total += 1
        if denied and w.denies is not None:
            w.denies[i] += 1
            w.denied += 1
        if now < w.quiet_until:
            return None
        rule = self.rule
        if self.ratio:
            if w.total < rule.min_decisions or w.denied < rule.threshold * w.total:
                return None
            detail = (
                f"{w.denied} of {w.total} decisions denied in {rule.window_seconds}s "
                f"({w.denied / w.total:.2f} >= {rule.threshold:g})"
            )
        else:
            if w.total <= self.limit:
                return None
            detail = (
                f"{w.total} decisions in {rule.window_seconds}s "
                f"({w.total / rule.window_seconds:.1f}/s > {rule.threshold:g}/s)"
            )
        self._clear(w, w.head)
        w.quiet_until = now + rule.window_seconds
        return detail

    def _slide(self, w: _Window, b: int) -> None:
        """Empty the buckets between the last one written and `b` (all of them after a long pause)."""
        n = self.buckets
        if b - w.head >= n:
            self._clear(w, b)
            return
        counts, denies = w.counts, w.denies
        for k in range(w.head + 1, b + 1):
            i = k % n
            w.total -= counts[i]
            counts[i] = 0
            if denies is not None:
                w.denied -= denies[i]
                denies[i] = 0
        w.head = b

    def _clear(self, w: _Window, b: int) -> None:
        n = self.buckets
        w.counts = _zeros(n)
        if w.denies is not None:
            w.denies = _zeros(n)
        w.total = w.denied = 0
        w.head = b


class _Agent:
    __slots__ = ("first", "known", "suspended", "windows")

    def __init__(self, windows: list[_Window], first: float) -> None:
        self.windows = windows
        self.first = first
        self.known: set[str] = set()
        self.suspended = False


class Detector:
    """Thread-safe; `observe` never raises. `clock` is monotonic seconds (injected by tests)."""

    def __init__(
        self,
        rules: Sequence[AnomalyRule],
        on_fire: Callable[[Firing], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_agents: int = MAX_AGENTS,
    ) -> None:
        self._windowed = [_Windowed(r) for r in rules if r.kind in ("deny_ratio", "rate")]
        self._learning = [r for r in rules if r.kind == "new_action"]
        self._on_fire = on_fire
        self._clock = clock
        self._max = max_agents
        self._agents: OrderedDict[str, _Agent] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, d: Decision) -> None:
        """One recorded decision. Cheap: the firing itself is `on_fire`'s."""
        if not d.agent or d.fault is not None or d.reason in _CONTAINED:
            return
        try:
            fired = self._count(d)
        except Exception:  # a side output never fails a decision
            log.exception("anomaly detection failed on a decision")
            return
        for firing in fired:
            try:
                self._on_fire(firing)
            except Exception:
                log.exception("anomaly: could not hand on a firing of %s", firing.rule.name)

    def release(self, agent: str) -> None:
        """The kill switch no longer disables `agent`: its rules run again, on fresh windows
        (what it learned stays)."""
        now = self._clock()
        with self._lock:
            st = self._agents.get(agent)
            if st is not None:
                st.suspended = False
                st.windows = [rule.new(now) for rule in self._windowed]

    def tracked(self) -> int:
        return len(self._agents)

    def _count(self, d: Decision) -> list[Firing]:
        now = self._clock()
        fired: list[Firing] = []
        with self._lock:
            st = self._agents.get(d.agent)
            if st is None:
                st = self._agents[d.agent] = _Agent([rule.new(now) for rule in self._windowed], now)
                if len(self._agents) > self._max:
                    self._agents.popitem(last=False)
            else:
                self._agents.move_to_end(d.agent)
            if st.suspended:
                return fired
            if self._windowed:
                ratio = d.reason not in _NOT_RATIO
                denied = not d.allowed
                for rule, w in zip(self._windowed, st.windows, strict=True):
                    if rule.ratio and not ratio:
                        continue
                    detail = rule.add(w, now, denied)
                    if detail is not None:
                        fired.append(Firing(rule.rule, d.agent, detail, d.decision_id))
            if self._learning and d.allowed and d.action not in st.known and len(st.known) < MAX_ACTIONS:
                st.known.add(d.action)
                age = now - st.first
                for learning in self._learning:
                    if age >= learning.learning_seconds:
                        detail = f"{d.action!r} allowed for the first time, {age:.0f}s after its first decision"
                        fired.append(Firing(learning, d.agent, detail, d.decision_id))
            if any(f.rule.action == "suspend" for f in fired):
                st.suspended = True
        return fired
