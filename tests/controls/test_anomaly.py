"""The anomaly detector's windows, on an injected clock: when each kind of rule fires, what
counts, how a window slides, the quiet after a firing, suspension and release, the bounds."""

from __future__ import annotations

from typing import Any

import pytest

from pep.config import AnomalyRule, parse_config
from pep.controls.anomaly import MAX_ACTIONS, Detector, Firing
from pep.decision import Decision, Fault
from pep.reasons import Reason


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rule(**fields: Any) -> AnomalyRule:
    return parse_config({"anomaly": {"rules": [fields]}}).anomaly.rules[0]


DENY_SPIKE = {"name": "deny-spike", "kind": "deny_ratio", "threshold": 0.5, "min_decisions": 20, "window_seconds": 60}
RUNAWAY = {"name": "runaway", "kind": "rate", "threshold": 2, "window_seconds": 10}


def decision(
    agent: str = "bot", allowed: bool = True, reason: Reason | None = None, action: str = "read", **kw: Any
) -> Decision:
    reason = reason or (Reason.ALLOWED if allowed else Reason.POLICY_FORBID)
    return Decision("d-1", allowed, reason, allowed, agent=agent, action=action, **kw)


def detector(*rules: dict[str, Any], **kw: Any) -> tuple[Detector, list[Firing], Clock]:
    fired: list[Firing] = []
    clock = Clock()
    return Detector([rule(**r) for r in rules], fired.append, clock=clock, **kw), fired, clock


def feed(det: Detector, n: int, clock: Clock | None = None, step: float = 0.0, **kw: Any) -> None:
    for _ in range(n):
        det.observe(decision(**kw))
        if clock is not None:
            clock.now += step


def test_deny_ratio_fires_at_min_decisions_with_the_figures() -> None:
    det, fired, _ = detector(DENY_SPIKE)
    feed(det, 8, allowed=True)
    feed(det, 11, allowed=False)
    assert fired == []  # 19 decisions: not enough to judge
    feed(det, 1, allowed=False)
    assert [f.detail for f in fired] == ["12 of 20 decisions denied in 60s (0.60 >= 0.5)"]
    assert fired[0].reason == "anomaly deny-spike: 12 of 20 decisions denied in 60s (0.60 >= 0.5)"
    assert fired[0].agent == "bot" and fired[0].rule.action == "alert"


def test_deny_ratio_below_the_threshold_never_fires_and_agents_are_apart() -> None:
    det, fired, _ = detector(DENY_SPIKE)
    for _ in range(50):
        feed(det, 3, allowed=True)
        feed(det, 2, allowed=False)  # 0.4
        feed(det, 1, agent="other", allowed=False)  # denied alone, but fewer than 20 until late
    assert [f.agent for f in fired] == ["other"]


def test_old_decisions_slide_out_of_the_window() -> None:
    det, fired, clock = detector(DENY_SPIKE)
    feed(det, 15, allowed=False)
    clock.now += 61  # all of them out of the window
    feed(det, 5, allowed=False)
    feed(det, 10, allowed=True)
    assert fired == []  # 5 of 15 in the window
    # Spread over the window, one bucket at a time: the first ones leave as the last arrive.
    det, fired, clock = detector(DENY_SPIKE)
    feed(det, 20, clock, step=4.0, allowed=False)  # 80 s: at most 15 in any 60 s
    assert fired == []
    feed(det, 5, allowed=False)  # 14 of the spread ones are still in
    assert fired == []
    feed(det, 1, allowed=False)
    assert len(fired) == 1 and fired[0].detail.startswith("20 of 20")


def test_a_rule_that_fired_is_quiet_for_a_window_then_judges_fresh_decisions() -> None:
    det, fired, clock = detector(DENY_SPIKE)
    feed(det, 20, allowed=False)
    feed(det, 100, allowed=False)
    assert len(fired) == 1
    clock.now += 30
    feed(det, 100, allowed=False)
    assert len(fired) == 1  # still quiet
    clock.now += 31
    feed(det, 1, allowed=False)
    assert len(fired) == 2
    assert fired[1].detail.startswith("101 of 101")  # the 100 made with the first firing slid out


def test_suspend_stops_every_rule_until_release_and_release_starts_afresh() -> None:
    det, fired, _ = detector({**DENY_SPIKE, "action": "suspend"}, {**RUNAWAY, "threshold": 3})
    feed(det, 20, allowed=False)
    assert [(f.rule.name, f.rule.action) for f in fired] == [("deny-spike", "suspend")]
    feed(det, 50, allowed=False)  # made before the kill switch holds: counted by no rule
    assert len(fired) == 1
    det.release("bot")
    feed(det, 8, allowed=False)  # the old denies are gone: 8 of 20 will not do
    feed(det, 12, allowed=True)
    assert len(fired) == 1
    feed(det, 11, allowed=True)  # the rate rule: 31 > 30 in 10 s
    assert [f.rule.name for f in fired] == ["deny-spike", "runaway"]


def test_containment_in_force_and_faults_count_for_no_rule() -> None:
    det, fired, _ = detector(
        DENY_SPIKE, {**RUNAWAY, "threshold": 0.1}, {"name": "new", "kind": "new_action", "learning_seconds": 0}
    )
    feed(det, 100, allowed=False, reason=Reason.AGENT_DISABLED)
    feed(det, 100, allowed=False, reason=Reason.AGENT_EXPIRED)
    feed(det, 100, agent="", allowed=False, reason=Reason.TOKEN_EXPIRED)
    feed(det, 100, allowed=False, reason=Reason.INVALID_REQUEST, fault=Fault.INVALID_ARGUMENT)
    assert fired == [] and det.tracked() == 0


def test_rate_limited_counts_toward_the_rate_but_not_the_deny_ratio() -> None:
    det, fired, _ = detector(DENY_SPIKE, RUNAWAY)
    feed(det, 20, allowed=False, reason=Reason.RATE_LIMITED)
    assert fired == []  # 20 in 10 s is 2/s, not more
    feed(det, 1, allowed=False, reason=Reason.RATE_LIMITED)
    assert [f.rule.name for f in fired] == ["runaway"]
    assert fired[0].detail == "21 decisions in 10s (2.1/s > 2/s)"


def test_rate_over_the_window_and_a_long_pause() -> None:
    det, fired, clock = detector(RUNAWAY)
    feed(det, 20, clock, step=0.5)  # 2/s for 10 s: at the threshold, not over
    assert fired == []
    clock.now += 3600
    feed(det, 20)
    assert fired == []  # the pause emptied every bucket
    feed(det, 1)
    assert len(fired) == 1


def test_new_action_learns_then_fires_once_per_action_allowed() -> None:
    det, fired, clock = detector({"name": "new-action", "kind": "new_action", "learning_seconds": 100})
    feed(det, 3, action="read")
    clock.now += 50
    feed(det, 1, action="list")  # still learning
    clock.now += 50
    feed(det, 5, action="read")
    feed(det, 1, action="write", allowed=False)  # denied: never allowed, so not new
    assert fired == []
    feed(det, 2, action="write")
    feed(det, 1, action="list")
    assert [(f.agent, f.detail) for f in fired] == [
        ("bot", "'write' allowed for the first time, 100s after its first decision")
    ]
    # Another agent learns on its own clock; what `bot` learned survives a release.
    feed(det, 1, agent="late", action="delete")
    det.release("bot")
    feed(det, 1, action="write")
    assert len(fired) == 1


def test_bounds_agents_least_recently_seen_dropped_and_learned_actions_capped() -> None:
    det, fired, _ = detector(DENY_SPIKE, max_agents=3)
    for agent in ("a", "b", "c", "d"):
        feed(det, 10, agent=agent, allowed=False)
    assert det.tracked() == 3 and fired == []
    feed(det, 10, agent="a", allowed=False)  # dropped for d: starts again at 10 (and b goes)
    feed(det, 10, agent="c", allowed=False)  # kept: 20 of its denies seen
    assert [f.agent for f in fired] == ["c"]
    det, fired, _ = detector({"name": "new", "kind": "new_action", "learning_seconds": 0})
    for i in range(MAX_ACTIONS + 5):
        det.observe(decision(action=f"act{i}"))
    assert len(fired) == MAX_ACTIONS


def test_a_failing_hand_off_never_reaches_the_caller() -> None:
    def broken(_f: Firing) -> None:
        raise RuntimeError("boom")

    det = Detector([rule(**RUNAWAY)], broken, clock=Clock())
    feed(det, 30)  # no exception


@pytest.mark.parametrize("window", [1, 7, 60, 90, 86400])
def test_window_of_any_length_fires_at_the_same_count(window: int) -> None:
    det, fired, clock = detector({**DENY_SPIKE, "window_seconds": window, "min_decisions": 5})
    feed(det, 4, clock, step=window / 10, allowed=False)
    assert fired == []
    feed(det, 1, allowed=False)
    assert len(fired) == 1 and fired[0].detail.startswith(f"5 of 5 decisions denied in {window}s")
