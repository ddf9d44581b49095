"""The command line: exit codes and messages of validate, fmt, test, check, token and serve; help, --version."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
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
    assert "2 problems found" in err


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


# --- hostile and wrong input: one line and exit 2 (1 for a deny or a failed check), never a traceback ---

DEEP = "[" * 20000 + "]" * 20000
CHECK = ["check", "--policies", "{mini}", "--action", "read", "--resource", 'Doc::"plan"']
AUTHORIZE = ["authorize", "--address", "127.0.0.1:{closed}", "--timeout", "0.5", "--token", "t", "--action", "read"]
ADMIN = ["admin", "--address", "127.0.0.1:{closed}", "--timeout", "0.5"]


def _claims(**claims: object) -> list[str]:
    return [*CHECK, "--token-claims", json.dumps({"sub": "alice", **claims})]


# (id, argv, exit code, what stderr must say). Exit 2 cases print exactly one line.
HOSTILE: list[tuple[str, list[str], int, str]] = [
    ("no command", [], 2, "give a command"),
    ("unknown command", ["frobnicate"], 2, "invalid choice"),
    ("admin without action", ["admin"], 2, "ACTION"),
    ("serve bad log level", ["serve", "--log-level", "chatty"], 2, "--log-level"),
    ("serve missing config", ["serve", "--config", "{missing}"], 2, "no such file"),
    ("serve config is a dir", ["serve", "--config", "{dir}"], 2, "is a directory"),
    ("serve config not utf8", ["serve", "--config", "{latin1}"], 2, "not UTF-8"),
    ("serve config deep", ["serve", "--config", "{deep_yaml}"], 2, "nested too deeply"),
    ("validate missing dir", ["validate", "{missing}"], 2, "no such directory"),
    ("validate a file", ["validate", "{file}"], 2, "not a directory"),
    ("validate deep file", ["validate", "{deep_agents}"], 1, "agents.yaml"),
    ("fmt a file", ["fmt", "{file}"], 2, "not a directory"),
    ("fmt non-utf8 policy", ["fmt", "--check", "{latin1_cedar}"], 1, "bad.cedar: not UTF-8"),
    ("test missing dir", ["test", "{missing}"], 2, "no such directory"),
    ("test non-utf8 suite", ["test", "{latin1_suite}"], 1, "x.yaml:1:1: not UTF-8"),
    ("test suite is a dir", ["test", "{dir_suite}"], 1, "d.yaml:1:1: cannot read"),
    ("test deep suite", ["test", "{deep_suite}"], 1, "deep.yaml"),
    ("test string act_chain", ["test", "{string_chain}"], 1, "must be a list of strings"),
    ("test junit in missing folder", ["test", "{mini}", "--junit", "{missing}/j.xml"], 2, "no such directory"),
    ("test junit a dir", ["test", "{mini}", "--junit", "{dir}"], 2, "is a directory"),
    ("test min-coverage over 100", ["test", "{mini}", "--min-coverage", "101"], 2, "--min-coverage"),
    ("test min-coverage not a number", ["test", "{mini}", "--min-coverage", "most"], 2, "--min-coverage"),
    ("agents missing dir", ["agents", "{missing}"], 2, "no such directory"),
    ("agents absurd soon", ["agents", "--soon", "99999999999999999999", "{mini}"], 2, "--soon"),
    ("agents non-utf8 registry", ["agents", "{latin1_agents}"], 1, "agents.yaml: not UTF-8"),
    ("agents registry is a dir", ["agents", "{dir_agents}"], 1, "agents.yaml: is a directory"),
    ("agents string scopes", ["agents", "{bad_scopes}"], 1, "agents.yaml:4:5: agents[0] (bot): `scopes` must"),
    ("agents usage without log", ["agents", "{mini}", "--usage"], 2, "--usage needs --log"),
    ("agents log without usage", ["agents", "{mini}", "--log", "{file}"], 2, "--log goes with --usage"),
    ("agents usage missing log", ["agents", "{mini}", "--usage", "--log", "{missing}"], 2, "missing: no such file"),
    ("agents usage a dir as log", ["agents", "{mini}", "--usage", "--log", "{dir}"], 2, "is a directory, not a log"),
    ("agents usage bad since", ["agents", "{mini}", "--usage", "--log", "{file}", "--since", "soon"], 2, "--since"),
    ("agents usage bad format", ["agents", "{mini}", "--usage", "--log", "{file}", "--format", "xml"], 2, "--format"),
    ("agents usage unloadable", ["agents", "{latin1_cedar}", "--usage", "--log", "{file}"], 2, "bad.cedar"),
    ("agents usage not a log", ["agents", "{mini}", "--usage", "--log", "{latin1}"], 0, "latin1.yaml:1: not a JSON"),
    ("agents usage odd entries", ["agents", "{mini}", "--usage", "--log", "{odd_log}"], 0, ""),
    ("check policies a file", [*CHECK[:2], "{file}", *CHECK[3:], "--principal", 'User::"a"'], 2, "not a directory"),
    ("check 1000 agents", _claims(act_chain=[f"a{i}" for i in range(1000)]), 2, "limit of 31"),
    ("check deep claims", [*CHECK, "--token-claims", DEEP], 2, "nested deeper than 32"),
    ("check string act_chain", _claims(act_chain="assistant"), 2, "act_chain` must be a list of strings"),
    ("check string scopes", _claims(scopes="files:read"), 2, "scopes` must be a list of strings"),
    ("check string groups", _claims(groups="finance"), 2, "groups` must be a list of strings"),
    ("check number in chain", _claims(act_chain=["worker", 7]), 2, "non-empty strings"),
    ("check shorthand with its claim", _claims(act_chain=["a"], act={"sub": "a"}), 2, "both `act_chain` and `act`"),
    ("check claim of wrong type", _claims(scope=["files:read"]), 2, "`token.scope` must be a space-separated"),
    ("check claims not object", [*CHECK, "--token-claims", "[1]"], 2, "must be a JSON object"),
    ("check NaN", [*CHECK, "--token-claims", '{"sub": "a", "x": NaN}'], 2, "NaN is not a finite number"),
    ("check duplicate key", [*CHECK, "--token-claims", '{"sub": "a", "sub": "b"}'], 2, "duplicate key"),
    ("check Infinity", [*CHECK, "--principal", 'User::"a"', "--context", '{"n": -Infinity}'], 2, "finite"),
    ("check huge int", [*CHECK, "--principal", 'User::"a"', "--context", '{"n": ' + "9" * 5000 + "}"], 2, "range"),
    ("check lone surrogate", [*CHECK, "--principal", 'User::"a"', "--context", '{"s": "\\ud800"}'], 2, "UTF-8"),
    ("check attributes array", [*CHECK, "--principal", 'User::"a"', "--attributes", "[]"], 2, "JSON object"),
    ("check bad json", [*CHECK, "--principal", 'User::"a"', "--context", "{"], 2, "not valid JSON"),
    ("check bad principal", [*CHECK, "--principal", "nonsense"], 2, "must be Type"),
    ("token 1200 agents", ["token", "--dev-dir", "{dev}", *["--agent", "a"] * 1200], 2, "more than the 31"),
    ("token absurd ttl", ["token", "--dev-dir", "{dev}", "--user", "u", "--ttl", "1" + "0" * 30], 2, "--ttl"),
    ("token empty agent", ["token", "--dev-dir", "{dev}", "--agent", ""], 2, "must not be empty"),
    ("token claims array", ["token", "--dev-dir", "{dev}", "--user", "u", "--claims", "[1]"], 2, "JSON object"),
    ("token claims deep", ["token", "--dev-dir", "{dev}", "--user", "u", "--claims", DEEP], 2, "nested deeper"),
    ("token string groups", ["token", "--dev-dir", "{dev}", "--user", "u", "--claims", '{"groups": "x"}'], 2, "list"),
    (
        "token claim and flag",
        ["token", "--dev-dir", "{dev}", "--agent", "a", "--scope", "s", "--claims", '{"scope": "t"}'],
        2,
        "use one",
    ),
    ("token dev-dir a file", ["token", "--dev-dir", "{file}", "--user", "u"], 2, "not a directory"),
    ("token corrupt key", ["token", "--dev-dir", "{bad_dev}", "--user", "u"], 2, "not an unencrypted PEM private key"),
    ("authorize context array", [*AUTHORIZE, "--resource", 'Doc::"p"', "--context", "[1]"], 2, "JSON object"),
    ("authorize deep attributes", [*AUTHORIZE, "--resource", 'Doc::"p"', "--attributes", DEEP], 2, "nested deeper"),
    ("authorize bad resource", [*AUTHORIZE, "--resource", "plan"], 2, "Type::"),
    (
        "authorize nan timeout",
        [*AUTHORIZE[:3], "--timeout", "nan", *AUTHORIZE[5:], "--resource", 'D::"p"'],
        2,
        "--timeout",
    ),
    ("authorize unreachable", [*AUTHORIZE, "--resource", 'Doc::"p"'], 1, ""),
    ("admin infinite timeout", ["admin", "--timeout", "inf", "status"], 2, "--timeout"),
    ("admin deep config", ["admin", "--config", "{deep_yaml}", "status"], 2, "nested too deeply"),
    ("config show missing config", ["config", "show", "--config", "{missing}"], 2, "no such file"),
    ("log query missing file", ["log", "query", "{file}", "{missing}"], 2, "missing: no such file"),
    ("log query bad since", ["log", "query", "--since", "tomorrow", "{file}"], 2, "argument --since"),
    ("log query not a log", ["log", "query", "{latin1}"], 0, "latin1.yaml:1: not a JSON log entry"),
    ("log verify a dir", ["log", "verify", "{dir}"], 2, "is a directory"),
    ("log verify not a log", ["log", "verify", "{file}"], 1, "file.txt:1: not a JSON entry"),
    ("init non-empty dir", ["init", "{mini}"], 2, "mini: not empty ("),
    ("init a file", ["init", "{file}"], 2, "exists and is not a directory"),
    ("init quote in install", ["init", "{missing}", "--install", 'pep"; rm -rf ~; "'], 2, "not a pip requirement"),
    ("init newline in install", ["init", "{missing}", "--install", "pep\nx: 1"], 2, "--install"),
    ("init huge install", ["init", "{missing}", "--install", "p" * 5000], 2, "at most 512 characters"),
    ("replay missing log", ["replay", "{missing}", "--policies", "{mini}"], 2, "missing: no such log file"),
    ("replay a dir as log", ["replay", "{dir}", "--policies", "{mini}"], 2, "is a directory, not a log file"),
    ("replay missing policies", ["replay", "{file}", "--policies", "{missing}"], 2, "no such directory"),
    ("replay policies that do not load", ["replay", "{file}", "--policies", "{latin1_cedar}"], 2, "bad.cedar"),
    ("replay not a log", ["replay", "{latin1}", "--policies", "{mini}"], 0, "latin1.yaml:1: not a JSON entry"),
    ("diff missing dir", ["diff", "{missing}", "{mini}"], 2, "no such directory"),
    ("diff a file", ["diff", "{mini}", "{file}"], 2, "not a directory"),
    ("diff outside git", ["diff", "git:HEAD", "{mini}"], 2, "is not in a git repository"),
    ("diff option as revision", ["diff", "git:--upload-pack=x", "{mini}"], 2, "not a revision"),
    ("diff newline in revision", ["diff", "git:HEAD\nx", "{mini}"], 2, "not a revision"),
    ("diff bad format", ["diff", "{mini}", "{mini}", "--format", "xml"], 2, "--format"),
    ("diff unloadable", ["diff", "{mini}", "{latin1_cedar}"], 2, "bad.cedar"),
    ("diff same", ["diff", "{mini}", "{mini}"], 0, ""),
    ("suggest missing log", ["suggest", "--log", "{missing}", "--agent", "a"], 2, "missing: no such file"),
    ("suggest without agent", ["suggest", "--log", "{file}"], 2, "--agent"),
    ("suggest empty agent", ["suggest", "--log", "{file}", "--agent", ""], 2, "must not be empty"),
    ("suggest policies a file", ["suggest", "--log", "{file}", "--agent", "a", "-p", "{file}"], 2, "not a directory"),
    ("suggest unloadable", ["suggest", "--log", "{file}", "--agent", "a", "-p", "{latin1_cedar}"], 2, "bad.cedar"),
    ("suggest not a log", ["suggest", "--log", "{latin1}", "--agent", "a"], 1, "latin1.yaml:1: not a JSON"),
    ("suggest odd entries", ["suggest", "--log", "{odd_log}", "--agent", "a", "-p", "{mini}"], 0, "suggested.a.read"),
    ("admin disable all with id", [*ADMIN, "disable", "all", "some-id", "--reason", "r"], 2, "takes no id"),
    ("admin enable all with id", [*ADMIN, "enable", "all", "some-id"], 2, "takes no id"),
    ("admin disable agent no id", [*ADMIN, "disable", "agent", "--reason", "r"], 2, "needs an id"),
    ("admin empty reason", [*ADMIN, "disable", "agent", "a", "--reason", ""], 2, "must not be empty"),
    ("admin unreachable", [*ADMIN, "status"], 1, "UNAVAILABLE"),
    ("admin revoke no zone", [*ADMIN, "revoke", "agent", "a", "--before", "2026-12-01T10", "--reason", "r"], 2, "zone"),
    ("admin revoke unreachable", [*ADMIN, "revoke", "agent", "a", "--reason", "r"], 1, "UNAVAILABLE"),
    ("admin unrevoke bad kind", [*ADMIN, "unrevoke", "group", "a"], 2, "invalid choice"),
    ("admin unrevoke unreachable", [*ADMIN, "unrevoke", "token", "j"], 1, "UNAVAILABLE"),
]


def _fill(arg: str, paths: dict[str, str]) -> str:
    """`{name}` placeholders replaced by the fixture's paths; JSON braces left alone."""
    return re.sub(r"\{(\w+)\}", lambda m: paths.get(m.group(1), m.group(0)), arg)


@pytest.fixture(scope="module")
def hostile_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The files and directories the hostile table points at, made once."""
    from tests.harness.waits import free_port

    root = tmp_path_factory.mktemp("hostile")

    def estate(name: str) -> Path:
        d = root / name
        (d / "tests").mkdir(parents=True)
        (d / "p.cedar").write_text("permit (principal, action, resource);\n")
        return d

    paths = {"mini": estate("mini"), "missing": root / "missing", "dir": root, "file": root / "file.txt"}
    paths["file"].write_text("just a file\n")
    paths["latin1"] = root / "latin1.yaml"
    paths["latin1"].write_bytes(b"listen: \xff\n")
    paths["deep_yaml"] = root / "deep.yaml"
    paths["deep_yaml"].write_text("a: " + "[" * 990 + "]" * 990 + "\n")
    paths["deep_agents"] = estate("deep_agents")
    (paths["deep_agents"] / "agents.yaml").write_text(DEEP)
    paths["latin1_cedar"] = root / "latin1_cedar"
    paths["latin1_cedar"].mkdir()
    (paths["latin1_cedar"] / "bad.cedar").write_bytes(b'permit (principal, action, resource) when { "\xff" };\n')
    paths["latin1_suite"] = estate("latin1_suite")
    (paths["latin1_suite"] / "tests" / "x.yaml").write_bytes(b"cases:\n  - name: \xff\n")
    paths["dir_suite"] = estate("dir_suite")
    (paths["dir_suite"] / "tests" / "d.yaml").mkdir()
    paths["deep_suite"] = estate("deep_suite")
    (paths["deep_suite"] / "tests" / "deep.yaml").write_text(DEEP)
    paths["string_chain"] = estate("string_chain")
    (paths["string_chain"] / "tests" / "s.yaml").write_text(
        "cases:\n  - {name: s, token: {sub: alice, act_chain: assistant}, action: read, "
        "resource: 'Doc::\"plan\"', expect: deny}\n"
    )
    paths["latin1_agents"] = estate("latin1_agents")
    (paths["latin1_agents"] / "agents.yaml").write_bytes(b"agents:\n  - id: \xff\n")
    paths["dir_agents"] = estate("dir_agents")
    (paths["dir_agents"] / "agents.yaml").mkdir()
    paths["bad_scopes"] = estate("bad_scopes")
    (paths["bad_scopes"] / "agents.yaml").write_text("agents:\n  - id: bot\n    owner: o\n    scopes: files:read\n")
    paths["odd_log"] = root / "odd.log"
    ts = '"ts": "2026-01-01T00:00:00Z"'
    odd = [
        "{" + ts + ', "agent": "a", "decision": "allow", "reason": "allowed", "resource": "x", "token": 7}',
        "{" + ts + ', "agent": "a", "decision": "allow", "reason": "allowed", "action": "read", '
        '"resource": {"type": "Doc", "id": 5}, "token": {"iss": "i", "scopes": "s"}, "scopes_dropped": 3}',
        "{"
        + ts
        + ', "agent": ["a"], "decision_id": "d", "inputs": {"evaluated": true, "batch": {"id": "b", "size": 2}}}',
        "{" + ts + ', "agent": "a", "decision_id": 1, "decision": "allow", "reason": "allowed", "action": "read", '
        '"resource": {"type": "Doc", "id": "p"}, "token": [], "inputs": {"evaluated": true, "batch": 4}}',
    ]
    paths["odd_log"].write_text("\n".join(odd) + "\n")
    paths["dev"] = root / "dev"
    paths["bad_dev"] = root / "bad_dev"
    paths["bad_dev"].mkdir()
    (paths["bad_dev"] / "signing-key.pem").write_text("not a key\n")
    out = {k: str(v) for k, v in paths.items()}
    out["closed"] = str(free_port())
    return out


@pytest.mark.parametrize(("argv", "code", "says"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_input_is_one_line_and_an_exit_code(
    hostile_paths: dict[str, str], argv: list[str], code: int, says: str
) -> None:
    args = [_fill(a, hostile_paths) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "pep", *args], capture_output=True, timeout=60, cwd=hostile_paths["dir"], check=False
    )
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert "Traceback" not in out + err, err
    assert proc.returncode == code, err
    assert says in (err if code == 2 else out + err), err
    if code == 2:
        assert len(err.splitlines()) == 1, err
        assert err.startswith("pep"), err


def test_the_hostile_table_covers_every_command() -> None:
    leaves = {
        path for path, p in _walk(_parser()) if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    }
    covered = set()
    for _, argv, _, _ in HOSTILE:
        words = [a for a in argv if not a.startswith("-")]
        for leaf in leaves:
            parts = leaf.split()[1:]
            if [w for w in words if w in parts] == parts and argv and argv[0] == parts[0]:
                covered.add(leaf)
    assert leaves - covered == set()


def test_token_from_stdin_must_be_utf8(hostile_paths: dict[str, str]) -> None:
    argv = [*AUTHORIZE, "--resource", 'Doc::"p"']
    argv[argv.index("t")] = "-"
    proc = subprocess.run(
        [sys.executable, "-m", "pep", *(_fill(a, hostile_paths) for a in argv)],
        input=b"\xff\xfe",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr.decode().strip()) == (
        2,
        "pep authorize: --token -: stdin is not UTF-8 (byte 0)",
    )


def test_the_chain_limit_is_a_usage_error_past_it_and_a_deny_at_it(capsys: pytest.CaptureFixture[str]) -> None:
    from pep.dev.tokens import MAX_ACT_CHAIN

    base = ["check", "--policies", str(POLICIES), "--action", "read_file", "--resource", 'File::"x"']
    chain = [f"bot-{i}" for i in range(MAX_ACT_CHAIN)]
    assert main([*base, "--token-claims", json.dumps({"sub": "alice", "act_chain": chain})]) == 1
    assert "reason:   chain_too_deep" in capsys.readouterr().out
    over = json.dumps({"sub": "alice", "act_chain": [*chain, "one-more"]})
    assert main([*base, "--token-claims", over]) == 2
    assert f"more than the limit of {MAX_ACT_CHAIN}" in capsys.readouterr().err
    assert f"(at most {MAX_ACT_CHAIN})" in " ".join(dict(_walk(_parser()))["pep token"].format_help().split())
