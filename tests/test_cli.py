"""The command line: exit codes and messages of validate, fmt, test, check, token and serve; help, --version."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pep
from pep.cli import _parser, main

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


def _walk(parser: argparse.ArgumentParser, path: str = "pep") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command of the tree with its parser, the root first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert listed.get(name), f"{path} {name}: no help in the command list"
                yield from _walk(sub, f"{path} {name}")


def test_every_command_has_a_description_and_every_argument_help() -> None:
    commands = dict(_walk(_parser()))
    assert {"pep serve", "pep admin enable", "pep validate", "pep fmt", "pep authorize"} <= commands.keys()
    missing = []
    for path, parser in commands.items():
        if not parser.description:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}: no help")
    assert missing == []


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pep {pep.__version__}"
    assert pep.__version__ == importlib.metadata.version("pep")


@pytest.mark.parametrize("module", ["pep", "pep.cli"])
def test_python_dash_m_runs_the_command_line(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: pep ")
    for command in ("serve", "admin", "agents", "validate", "fmt", "check", "test", "token", "authorize"):
        assert command in proc.stdout
