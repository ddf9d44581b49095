"""The command line: exit codes and messages of validate, fmt, test, check, token and serve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pep.cli import main

POLICIES = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture
def estate(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "pep.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "validate", "fmt", "check", "test", "token", "authorize"):
        assert command in out


def test_validate_reports_every_problem_with_file_line_col(estate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (estate / "broken.cedar").write_text(
        "permit(principal, action, resource);\n\npermit(principal, action, resource) when {\n"
    )
    files = (estate / "files.cedar").read_text()
    (estate / "files.cedar").write_text(files.replace("resource.owner", "resource.no_such_attr", 1))
    assert main(["validate", str(estate)]) == 1
    err = capsys.readouterr().err
    assert f"{estate}/broken.cedar:3:1: parse error" in err
    assert f"{estate}/files.cedar:" in err and "no_such_attr" in err
    assert "2 problem(s) found" in err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(POLICIES)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_fmt_check_then_write(estate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", "--check", str(estate)]) == 0
    (estate / "ugly.cedar").write_text("permit(principal,action,resource)when{true};\n")
    assert main(["fmt", "--check", str(estate)]) == 1
    assert "would reformat" in capsys.readouterr().out
    assert (estate / "ugly.cedar").read_text() == "permit(principal,action,resource)when{true};\n"
    assert main(["fmt", str(estate)]) == 0
    assert (estate / "ugly.cedar").read_text().startswith("permit (principal, action, resource)")
    assert main(["fmt", "--check", str(estate)]) == 0


def test_fmt_names_the_line_of_an_unparsable_policy(estate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (estate / "bad.cedar").write_text("permit(principal, action, resource);\n// x\npermit(\n")
    assert main(["fmt", "--check", str(estate)]) == 1
    assert f"{estate}/bad.cedar:3:1: parse error" in capsys.readouterr().err


def test_check_explains_with_policy_source(capsys: pytest.CaptureFixture[str]) -> None:
    claims = json.dumps({"sub": "alice", "act_chain": ["assistant"], "scopes": ["files:read"]})
    args = ["check", "--policies", str(POLICIES), "--token-claims", claims, "--action", "read_file"]
    assert main([*args, "--resource", 'File::"finance/reports/q3-forecast.xlsx"', "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "allow" and out["reason"] == "allowed"
    assert out["policies"][0]["id"] == "files.read.as-user"
    assert out["policies"][0]["source"].startswith("files.cedar:")


def test_check_deny_exits_1_and_names_the_forbid(capsys: pytest.CaptureFixture[str]) -> None:
    claims = json.dumps({"sub": "alice", "act_chain": ["billing-bot"], "scopes": ["payments:write"]})
    code = main(
        [
            "check",
            "--policies",
            str(POLICIES),
            "--token-claims",
            claims,
            "--action",
            "pay",
            "--resource",
            'Account::"ops-usd"',
            "--context",
            '{"amount": 100, "currency": "USD"}',
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "reason:   policy_forbid" in out
    assert "payments.forbid.without-dpop (forbid) at" in out
    assert '    | when { context.binding != "dpop" };' in out  # the policy's own source


def test_check_bad_input_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--policies", str(POLICIES), "--principal", "nonsense", "--action", "x", "--resource", "y"])
    assert code == 2
    assert "must be Type" in capsys.readouterr().err


def test_token_mints_a_verifiable_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = tmp_path / "dev"
    assert main(["token", "--dev-dir", str(dev), "--user", "alice", "--agent", "assistant", "--scope", "a"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2
    assert (dev / "jwks.json").exists()
    assert (dev / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    assert main(["token", "--dev-dir", str(dev)]) == 2


def test_serve_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "pep.yaml"
    cfg.write_text("listen: 127.0.0.1:0\ndelegation:\n  max_depth: zero\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pep.cli", "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "delegation.max_depth" in proc.stderr


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("lissten: 1\n", "lissten"),
        ("mode: chaos\n", "mode"),
        ("listen: nowhere\n", "listen"),
        (
            "issuers:\n  - issuer: https://x\n    audiences: [a]\n    jwks_file: k.json\n    algorithms: [HS256]\n",
            "issuers[0].algorithms",
        ),
        ("issuers:\n  - issuer: https://x\n    audiences: [a]\n", "issuers[0]"),
        (
            "issuers:\n  - issuer: https://x\n    jwks_file: /nonexistent/jwks.json\n    audiences: [a]\n",
            "issuers[0].jwks_file",
        ),
        ("tokens: {leeway_seconds: 9000}\n", "tokens.leeway_seconds"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, yaml_text: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "pep.yaml"
    cfg.write_text(yaml_text)
    from pep.config import load_config
    from pep.errors import ConfigError
    from pep.tokens.verifier import TokenVerifier

    with pytest.raises(ConfigError) as info:
        config = load_config(str(cfg))
        TokenVerifier(config.issuers, config.tokens).close()
    assert info.value.key == key
