"""Token buckets with a fake clock: exact counts, refill, groups, actions, bounded memory."""

from __future__ import annotations

import pytest

from pep.controls.ratelimit import RateLimiter
from pep.errors import ControlError
from pep.policy.limits_file import Limits, Rate, parse_limits
from pep.policy.source import load_yaml


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def allowed(limiter: RateLimiter, limits: Limits, n: int, agent: str = "a", groups=(), action: str = "x") -> int:
    ok = 0
    for _ in range(n):
        try:
            limiter.take(limits, agent, groups, action)
            ok += 1
        except ControlError as e:
            assert e.reason.value == "rate_limited"
    return ok


def test_burst_then_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = Limits(default=Rate(rate=2, burst=5))
    assert allowed(limiter, limits, 20) == 5
    clock.now += 1.0  # two tokens back
    assert allowed(limiter, limits, 20) == 2
    clock.now += 100  # never above the burst
    assert allowed(limiter, limits, 20) == 5


def test_agent_limit_overrides_group_and_default() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = Limits(default=Rate(50, 100), agents={"a": Rate(1, 2)}, groups={"g": Rate(1, 50)})
    assert allowed(limiter, limits, 10, agent="a", groups=["g"]) == 2


def test_group_bucket_is_shared_by_its_members() -> None:
    limiter = RateLimiter(clock=Clock())
    limits = Limits(default=Rate(100, 100), groups={"finance": Rate(1, 4)})
    total = sum(allowed(limiter, limits, 3, agent=a, groups=["finance"]) for a in ("a", "b", "c"))
    assert total == 4


def test_action_limit_is_per_agent_and_action() -> None:
    limiter = RateLimiter(clock=Clock())
    limits = Limits(default=Rate(100, 100), actions={"pay": Rate(1, 3)})
    assert allowed(limiter, limits, 10, action="pay") == 3
    assert allowed(limiter, limits, 10, action="read") == 10
    assert allowed(limiter, limits, 10, agent="b", action="pay") == 3


def test_a_refused_call_spends_no_token() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = Limits(default=Rate(1, 10), actions={"pay": Rate(1, 1)})
    assert allowed(limiter, limits, 5, action="pay") == 1  # 4 refused by the action bucket
    assert allowed(limiter, limits, 20, action="read") == 9  # the agent bucket lost only one


def test_memory_stays_bounded_with_100000_agents() -> None:
    limiter = RateLimiter(clock=Clock(), max_buckets=10_000)
    limits = Limits(default=Rate(50, 100))
    for i in range(100_000):
        limiter.take(limits, f"agent-{i}", (), "x")
    assert len(limiter) == 10_000


def test_no_limits_means_no_buckets() -> None:
    limiter = RateLimiter(clock=Clock())
    assert allowed(limiter, Limits(), 1000) == 1000
    assert len(limiter) == 0


def test_parse_limits_as_documented() -> None:
    text = """
default: {rate: 50, burst: 100}
agents: {billing-bot: {rate: 5, burst: 10}}
groups: {finance-agents: {rate: 20, burst: 40}}
actions: {pay: {rate: 1, burst: 3}}
"""
    limits, problems = parse_limits(load_yaml(text, "limits.yaml"), "limits.yaml")
    assert problems == []
    assert limits.default == Rate(50, 100) and limits.actions["pay"] == Rate(1, 3)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("default: {rate: -1}\n", "default.rate"),
        ("agents: {a: {rate: fast}}\n", "agents.a.rate"),
        ("agents: {a: {rate: 1, burst: 0.5}}\n", "agents.a.burst"),
        ("agents: {a: {rate: 1, burts: 2}}\n", "agents.a"),
        ("users: {}\n", "unknown key 'users'"),
    ],
)
def test_bad_limits_are_located(text: str, needle: str) -> None:
    _, problems = parse_limits(load_yaml(text, "limits.yaml"), "limits.yaml")
    assert problems and needle in str(problems[0])
    assert str(problems[0]).startswith("limits.yaml:1:")
