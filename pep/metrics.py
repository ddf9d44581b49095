"""Every Prometheus metric pep exports, in one place, with bounded labels (docs/observability.md).

Label values come from closed sets only: `decision` (allow, deny), `reason` (the reason
codes), `action` (the loaded schema's actions, anything else `other`, or an anomaly rule's
alert or suspend), `result` (success, failure), `rule` (the configured anomaly rules' names).
No agent, user or resource ids: they would make the series count grow with the estate.
`deploy/` holds the dashboard and alerts built on these names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector

import pep
from pep.decision import Decision

log = logging.getLogger(__name__)

# 50 µs to 1 s: sub-millisecond decisions land in their own buckets.
DURATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
OTHER_ACTION = "other"
# `pep_state_errors_total{op}`: the closed set of shared-state operations.
STATE_OPS = ("connect", "sync", "write", "subscribe", "file", "ratelimit", "replay")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.decisions = Counter(
            "pep_decisions_total",
            "Decisions made, by decision, reason code and action.",
            ["decision", "reason", "action"],
            registry=r,
        )
        self.decision_duration = Histogram(
            "pep_decision_duration_seconds",
            "Time pep spent on one decision.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "pep_policy_reloads_total", "Policy set loads, by result (success or failure).", ["result"], registry=r
        )
        self.last_reload_success = Gauge(
            "pep_policy_last_reload_success_timestamp_seconds",
            "Unix time of the last successful policy load.",
            registry=r,
        )
        # Later than the last success: the files on disk are not what pep serves (stale).
        self.last_reload_failure = Gauge(
            "pep_policy_last_reload_failure_timestamp_seconds",
            "Unix time of the last rejected policy load (0 if none).",
            registry=r,
        )
        self.policy_info = Gauge(
            "pep_policy_info",
            "The policy set being served (value 1), by content-hash version.",
            ["version"],
            registry=r,
        )
        self.policies_loaded = Gauge("pep_policies_loaded", "Policies in the served set.", registry=r)
        self.agents_registered = Gauge("pep_agents_registered", "Agents in the served registry.", registry=r)
        self.http_refusals = Counter(
            "pep_http_refusals_total",
            "HTTP requests the AuthZEN or MCP listener answered with an error before any decision, by status.",
            ["status"],
            registry=r,
        )
        self.memo_lookups = Counter(
            "pep_decision_memo_total",
            "Checks looked up in the decision memo, by result: hit (Cedar not asked) or miss.",
            ["result"],
            registry=r,
        )
        self._memo_hit, self._memo_miss = self.memo_lookups.labels("hit"), self.memo_lookups.labels("miss")
        self.mcp_upstream_errors = Counter(
            "pep_mcp_upstream_errors_total",
            "Allowed MCP messages the upstream MCP server did not answer usably (502: unreachable or an "
            "unreadable list; 504: no answer in time), by status.",
            ["status"],
            registry=r,
        )
        self.log_dropped = Counter(
            "pep_decision_log_dropped_total",
            "Decisions that could not be written to the decision log.",
            registry=r,
        )
        self.log_queue_length = Gauge(
            "pep_decision_log_queue_length", "Decision log entries waiting for the writer.", registry=r
        )
        self.log_queue_capacity = Gauge(
            "pep_decision_log_queue_capacity", "Decision log entries the queue holds before it drops.", registry=r
        )
        self.jwks_refreshes = Counter(
            "pep_jwks_refreshes_total", "JWKS fetches, by result (success or failure).", ["result"], registry=r
        )
        self.ready = Gauge("pep_ready", "1 when a valid policy set is loaded and pep serves decisions.", registry=r)
        self.shadow_divergences = Counter(
            "pep_shadow_divergences_total",
            "Decisions where the shadow policies would have answered differently, by action.",
            ["action"],
            registry=r,
        )
        self.killswitch_entries = Gauge(
            "pep_killswitch_entries",
            "What the kill switch disables now, by kind, source (file, admin or anomaly) and scope (local or fleet).",
            ["kind", "source", "scope"],
            registry=r,
        )
        self.revocations = Gauge(
            "pep_revocations",
            "Revocations in force, by kind (token, agent, user, issuer), source (file or admin) and scope.",
            ["kind", "source", "scope"],
            registry=r,
        )
        self.anomaly_events = Counter(
            "pep_anomaly_events_total",
            "Anomaly rules that fired for an agent, by rule name (from the config) and action (alert or suspend).",
            ["rule", "action"],
            registry=r,
        )
        # Registered by `shared_state()`: a pep without Redis exports no pep_state_up (nothing to be down).
        self.state_up = Gauge(
            "pep_state_up", "1 when the shared state (Redis, state.redis_url) answers; 0 when not.", registry=None
        )
        self.state_errors = Counter(
            "pep_state_errors_total",
            "Failed calls to the shared state, by operation (connect, sync, write, subscribe, file, ratelimit, "
            "replay).",
            ["op"],
            registry=r,
        )
        self.build = Info("pep_build", "pep build information.", registry=r)
        self.build.info({"version": pep.__version__})
        self._actions: frozenset[str] = frozenset()
        # Children by label values: `labels()` takes a lock and builds a key on every call.
        self._decision_children: dict[tuple[str, str, str], Counter] = {}
        self._children_lock = threading.Lock()
        self._policy_version: str | None = None
        for result in ("success", "failure"):
            self.reloads.labels(result)
            self.jwks_refreshes.labels(result)
        for op in STATE_OPS:
            self.state_errors.labels(op)
        for status in ("502", "504"):  # the proxy's only upstream failures: present at 0 from the start
            self.mcp_upstream_errors.labels(status)

    def set_actions(self, actions: frozenset[str]) -> None:
        """Actions named in the loaded schema; any other action is labelled `other`."""
        self._actions = actions

    def action_label(self, action: str) -> str:
        return action if action in self._actions else OTHER_ACTION

    def count_decision(self, decision: str, reason: str, action: str, seconds: float) -> None:
        """One decision: `decision` allow or deny, `reason` a reason code, `action` as asked."""
        key = (decision, reason, self.action_label(action))
        child = self._decision_children.get(key)
        if child is None:
            with self._children_lock:
                child = self._decision_children.setdefault(key, self.decisions.labels(*key))
        child.inc()
        self.decision_duration.observe(seconds)

    def count(self, decision: Decision) -> None:
        """A final decision, as answered: its count, duration and any shadow divergence. Never raises."""
        try:
            allowed = "allow" if decision.allowed else "deny"
            self.count_decision(allowed, decision.reason.value, decision.action, decision.duration_us / 1e6)
            if decision.shadow_diverged:
                self.shadow_divergences.labels(self.action_label(decision.action)).inc()
        except Exception:  # a side output never fails a decision
            log.exception("could not count a decision")

    def http_refused(self, status: int) -> None:
        """One HTTP refusal that decided nothing (so no decision was counted for it)."""
        self.http_refusals.labels(str(status)).inc()

    def memo_looked_up(self, hit: bool) -> None:
        (self._memo_hit if hit else self._memo_miss).inc()

    def anomaly_rules(self, rules: Iterable[tuple[str, str]]) -> None:
        """The configured rules' (name, action): each series present at 0 from the start."""
        for rule, action in rules:
            self.anomaly_events.labels(rule, action)

    def anomaly_fired(self, rule: str, action: str) -> None:
        self.anomaly_events.labels(rule, action).inc()

    def mcp_upstream_failed(self, status: int) -> None:
        self.mcp_upstream_errors.labels(str(status)).inc()

    def policy_loaded(self, version: str, policies: int, agents: int, at: float) -> None:
        self.reloads.labels("success").inc()
        self.last_reload_success.set(at)
        # New version first, then the old one goes: a scrape never sees no version at all.
        self.policy_info.labels(version).set(1)
        if self._policy_version is not None and self._policy_version != version:
            self.policy_info.remove(self._policy_version)
        self._policy_version = version
        self.policies_loaded.set(policies)
        self.agents_registered.set(agents)
        self.ready.set(1)

    def policy_failed(self, at: float | None = None) -> None:
        self.reloads.labels("failure").inc()
        self.last_reload_failure.set(time.time() if at is None else at)

    def jwks_refreshed(self, result: str) -> None:
        """The token verifier's JWKS hook: `result` is success or failure."""
        self.jwks_refreshes.labels("success" if result == "success" else "failure").inc()

    def shared_state(self) -> None:
        """This pep keeps state in Redis: export pep_state_up (0 until the first answer)."""
        self.registry.register(self.state_up)

    def watch_log_queue(self, length: Callable[[], int], capacity: int) -> None:
        self.log_queue_length.set_function(length)
        self.log_queue_capacity.set(capacity)
