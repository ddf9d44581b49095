"""The `anomaly` section: the rules as documented, every mistake naming its key, `pep config show`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep.cli import main
from pep.config import AnomalyConfig, AnomalyRule, load_config, parse_config
from pep.errors import ConfigError

DOCUMENTED = """
anomaly:
  rules:
    - name: deny-spike
      kind: deny_ratio            # share of denies
      threshold: 0.5
      min_decisions: 20
      window_seconds: 60
      action: suspend             # alert | suspend
    - name: runaway
      kind: rate                  # decisions per second, over the window
      threshold: 20
      window_seconds: 10
      action: alert
    - name: new-action
      kind: new_action            # an action this agent was never allowed before
      learning_seconds: 86400
      action: alert
"""

RATIO = {"name": "r", "kind": "deny_ratio", "threshold": 0.5, "min_decisions": 20, "window_seconds": 60}


def test_the_documented_rules(tmp_path: Path) -> None:
    path = tmp_path / "pep.yaml"
    path.write_text(DOCUMENTED)
    assert load_config(str(path)).anomaly == AnomalyConfig(
        (
            AnomalyRule("deny-spike", "deny_ratio", "suspend", 0.5, 20, 60),
            AnomalyRule("runaway", "rate", "alert", 20.0, window_seconds=10),
            AnomalyRule("new-action", "new_action", "alert", learning_seconds=86400),
        )
    )
    assert parse_config({}).anomaly == AnomalyConfig()
    assert parse_config({"anomaly": None}).anomaly == parse_config({"anomaly": {"rules": []}}).anomaly
    # `action` may be left out: alert.
    assert parse_config({"anomaly": {"rules": [RATIO]}}).anomaly.rules[0].action == "alert"


@pytest.mark.parametrize(
    ("rules", "key"),
    [
        ({"rule": []}, "anomaly.rule"),
        ("deny-spike", "anomaly"),
        ({"rules": {"name": "x"}}, "anomaly.rules"),
        ({"rules": ["x"]}, "anomaly.rules[0]"),
        ({"rules": [{**RATIO, "windows": 5}]}, "anomaly.rules[0].windows"),
        ({"rules": [{k: v for k, v in RATIO.items() if k != "name"}]}, "anomaly.rules[0].name"),
        ({"rules": [{k: v for k, v in RATIO.items() if k != "kind"}]}, "anomaly.rules[0].kind"),
        ({"rules": [{**RATIO, "name": "a b"}]}, "anomaly.rules[0].name"),
        ({"rules": [{**RATIO, "name": ""}]}, "anomaly.rules[0].name"),
        ({"rules": [RATIO, {**RATIO, "threshold": 0.9}]}, "anomaly.rules[1].name"),
        ({"rules": [{**RATIO, "kind": "ratio"}]}, "anomaly.rules[0].kind"),
        ({"rules": [{**RATIO, "action": "kill"}]}, "anomaly.rules[0].action"),
        ({"rules": [RATIO, {**RATIO, "name": "b", "threshold": "0.5"}]}, "anomaly.rules[1].threshold"),
        ({"rules": [{**RATIO, "threshold": float("nan")}]}, "anomaly.rules[0].threshold"),
        ({"rules": [{**RATIO, "threshold": float("inf")}]}, "anomaly.rules[0].threshold"),
        ({"rules": [{**RATIO, "threshold": -0.5}]}, "anomaly.rules[0].threshold"),
        ({"rules": [{**RATIO, "threshold": 0}]}, "anomaly.rules[0].threshold"),
        ({"rules": [{**RATIO, "threshold": 1.5}]}, "anomaly.rules[0].threshold"),
        ({"rules": [{**RATIO, "threshold": True}]}, "anomaly.rules[0].threshold"),
        ({"rules": [{**RATIO, "min_decisions": 0}]}, "anomaly.rules[0].min_decisions"),
        ({"rules": [{**RATIO, "min_decisions": 2.5}]}, "anomaly.rules[0].min_decisions"),
        ({"rules": [{**RATIO, "window_seconds": -60}]}, "anomaly.rules[0].window_seconds"),
        ({"rules": [{**RATIO, "window_seconds": 0.5}]}, "anomaly.rules[0].window_seconds"),
        ({"rules": [{**RATIO, "window_seconds": 86401}]}, "anomaly.rules[0].window_seconds"),
        ({"rules": [{k: v for k, v in RATIO.items() if k != "min_decisions"}]}, "anomaly.rules[0].min_decisions"),
        ({"rules": [{**RATIO, "learning_seconds": 60}]}, "anomaly.rules[0].learning_seconds"),
        ({"rules": [{"name": "x", "kind": "rate", "window_seconds": 10}]}, "anomaly.rules[0].threshold"),
        (
            {"rules": [{"name": "x", "kind": "rate", "threshold": 0, "window_seconds": 10}]},
            "anomaly.rules[0].threshold",
        ),
        (
            {"rules": [{"name": "x", "kind": "rate", "threshold": 5, "window_seconds": 10, "min_decisions": 3}]},
            "anomaly.rules[0].min_decisions",
        ),
        ({"rules": [{"name": "x", "kind": "new_action"}]}, "anomaly.rules[0].learning_seconds"),
        ({"rules": [{"name": "x", "kind": "new_action", "learning_seconds": -1}]}, "anomaly.rules[0].learning_seconds"),
        (
            {"rules": [{"name": "x", "kind": "new_action", "learning_seconds": 5, "threshold": 1}]},
            "anomaly.rules[0].threshold",
        ),
    ],
)
def test_mistakes_name_their_key(rules: Any, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"anomaly": rules})
    assert e.value.key == key, str(e.value)


def test_pep_serve_refuses_a_bad_rule_before_any_port_opens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pep.yaml"
    path.write_text(json.dumps({"policies": str(tmp_path), "anomaly": {"rules": [{**RATIO, "threshold": 2}]}}))
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "anomaly.rules[0].threshold" in err and "at most 1" in err


def test_config_show_prints_each_rule_with_its_kinds_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pep.yaml"
    path.write_text(f"policies: {tmp_path}\n" + textwrap.dedent(DOCUMENTED))
    assert main(["config", "show", "--config", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)["anomaly"]
    assert shown == {
        "rules": [
            {
                "name": "deny-spike",
                "kind": "deny_ratio",
                "threshold": 0.5,
                "min_decisions": 20,
                "window_seconds": 60,
                "action": "suspend",
            },
            {"name": "runaway", "kind": "rate", "threshold": 20.0, "window_seconds": 10, "action": "alert"},
            {"name": "new-action", "kind": "new_action", "learning_seconds": 86400, "action": "alert"},
        ]
    }
    # What config show prints is a config pep accepts, and means the same.
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump({"policies": str(tmp_path), "anomaly": shown}))
    assert load_config(str(again)).anomaly == load_config(str(path)).anomaly
