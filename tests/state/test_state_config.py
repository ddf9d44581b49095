"""The `state` section: every mistake names its key, the password never shows, and
`pep admin --state` finds it in the URL or in REDIS_PASSWORD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pep.cli import main
from pep.config import StateConfig, parse_config
from pep.errors import ConfigError

if TYPE_CHECKING:
    from tests.harness.redis import RedisServer


def test_defaults_and_accepted_forms(tmp_path: Path) -> None:
    assert parse_config({}).state == StateConfig("", "pep:", 50, "local", "")
    tls = parse_config({"state": {"redis_url": "rediss://:pw@redis.internal:6380/2", "on_unavailable": "deny"}})
    assert (tls.state.redis_url, tls.state.on_unavailable) == ("rediss://:pw@redis.internal:6380/2", "deny")
    local = parse_config({"state": {"file": "kills.json", "redis_url": ""}}, str(tmp_path))
    assert local.state.file == str(tmp_path / "kills.json")


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ({"redis": "redis://x"}, "state.redis"),
        ({"redis_url": "http://127.0.0.1:6379"}, "state.redis_url"),
        ({"redis_url": "redis://:p@h:99999/0"}, "state.redis_url"),
        ({"redis_url": "redis://h:6379/x"}, "state.redis_url"),
        ({"redis_url": 6379}, "state.redis_url"),
        ({"timeout_ms": "50"}, "state.timeout_ms"),
        ({"timeout_ms": 0}, "state.timeout_ms"),
        ({"on_unavailable": "allow"}, "state.on_unavailable"),
        ({"key_prefix": ""}, "state.key_prefix"),
        ({"redis_url": "redis://h:1/0", "file": "k.json"}, "state.file"),
        ("redis://h", "state"),
    ],
)
def test_mistakes_name_their_key_and_never_the_password(state: Any, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"state": state})
    assert e.value.key == key
    assert ":p@" not in str(e.value)


def test_config_show_masks_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "pep.yaml"
    cfg.write_text(
        json.dumps({"policies": str(tmp_path), "state": {"redis_url": "rediss://:hunter2@r.internal:6380/1"}})
    )
    assert main(["config", "show", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "rediss://***@r.internal:6380/1" in out and "on_unavailable: local" in out


def test_pep_admin_state_takes_the_password_from_the_url_or_the_environment(
    redis_with_password: RedisServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = f"redis://127.0.0.1:{redis_with_password.port}/0"
    assert main(["admin", "--state", bare, "status"]) == 2  # no password: refused, one line
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "AuthenticationError" in err
    with_pw = f"redis://:s3cret-pw@127.0.0.1:{redis_with_password.port}/0"
    assert main(["admin", "--state", with_pw, "disable", "user", "mallory", "--reason", "r", "--actor", "a"]) == 0
    out = capsys.readouterr().out
    assert "disabled user mallory fleet-wide" in out and "s3cret" not in out
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pw")
    assert main(["admin", "--state", bare, "status"]) == 0
    assert "disabled user mallory (admin, fleet" in capsys.readouterr().out
    assert main(["admin", "--key-prefix", "x:", "status"]) == 2  # --key-prefix alone would be silently ignored
