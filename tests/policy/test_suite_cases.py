"""Suite cases (docs/policy-tests.md): tokens in their own shape, located errors, the invalid_request rule."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pep.cli import main
from pep.dev.suite import CaseResult, SuiteRunner

POLICIES = Path(__file__).resolve().parents[2] / "policies"
REPORT = 'File::"finance/reports/q3-forecast.xlsx"'
# A base64url SHA-256 certificate thumbprint (43 characters).
THUMBPRINT = "q1MKuyN6u6mbk3H0OptsDXvw_jt0bwiZoEmaRaeE3Nk"


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("estate") / "policies"
    shutil.copytree(POLICIES, copy)
    for suite in (copy / "tests").iterdir():
        suite.unlink()
    return copy


@pytest.fixture(scope="module")
def runner(estate: Path) -> Iterator[SuiteRunner]:
    r = SuiteRunner(str(estate))
    try:
        yield r
    finally:
        r.close()


def run(runner: SuiteRunner, estate: Path, text: str, name: str = "t.yaml") -> list[CaseResult]:
    (estate / "tests" / name).write_text(textwrap.dedent(text))
    try:
        return list(runner.run_suite(f"tests/{name}"))
    finally:
        (estate / "tests" / name).unlink()


# --- the token's own shape -------------------------------------------------------------------

REAL_SHAPE = """\
cases:
  - name: nested act of depth 2, scope as a space-separated string
    token:
      sub: bob
      act:
        sub: code-runner
        act: {sub: assistant}
      scope: openid code:execute
      groups: [engineering]
      binding: dpop
    action: execute_code
    resource: Runtime::"sbx-1"
    expect: allow
    expect_policies: [code.execute.coders]
  - name: the nested act is read in order (assistant hands to the unsandboxed dev-coder)
    token:
      sub: bob
      act: {sub: dev-coder, act: {sub: assistant}}
      scope: code:write
      groups: [engineering]
      binding: dpop
    action: push_code
    resource: Repository::"pep"
    expect: deny
    expect_reason: chain_delegation_forbidden
  - name: scp as a list
    token: {sub: alice, act: {sub: assistant}, scp: [files:read], binding: dpop, groups: [finance]}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: allow
  - name: scp as a string
    token: {sub: alice, act: {sub: assistant}, scp: "openid files:read", binding: dpop, groups: [finance]}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: allow
  - name: the scope string is read, not ignored (no files:read, no permit)
    token: {sub: alice, act: {sub: assistant}, scope: "openid files:write", binding: dpop, groups: [finance]}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
    expect_reason: policy_no_permit
  - name: another issuer is untrusted
    token: {sub: alice, iss: "https://idp.example.com", act: {sub: assistant}, scope: files:read}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
    expect_reason: token_issuer_untrusted
  - name: a token for another audience is refused
    token: {sub: alice, aud: [other-api], act: {sub: assistant}, scope: files:read}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
    expect_reason: token_audience_invalid
  - name: an expired token (iat and exp as written)
    token: {sub: alice, iat: 1600000000, exp: 1600000300, act: {sub: assistant}, scope: files:read}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
    expect_reason: token_expired
  - name: client_id names the agent acting directly for the user
    token: {sub: alice, client_id: assistant, scope: files:read, binding: dpop, groups: [finance]}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: allow
  - name: a certificate-bound cnf is presented with its certificate
    token: {sub: code-runner, scope: code:execute, cnf: {"x5t#S256": THUMBPRINT}}
    action: execute_code
    resource: Runtime::"sbx-net-1"
    expect: deny
    expect_reason: policy_forbid
    expect_policies: [code.forbid.egress-autonomous]
  - name: a DPoP-bound cnf the runner holds no key for is sent without a proof
    token: {sub: code-runner, scope: code:execute, cnf: {jkt: THUMBPRINT}}
    action: execute_code
    resource: Runtime::"sbx-1"
    expect: deny
    expect_reason: dpop_proof_missing
  - name: may_act is read as a real claim
    token: {sub: alice, act: {sub: assistant}, may_act: {sub: billing-bot}, scope: files:read, binding: dpop}
    action: read_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
    expect_reason: chain_delegation_forbidden
""".replace("THUMBPRINT", THUMBPRINT)


def test_tokens_in_their_own_shape_run_through_the_pipeline(runner: SuiteRunner, estate: Path) -> None:
    results = run(runner, estate, REAL_SHAPE)
    assert len(results) == 12
    for r in results:
        assert r.passed, r.describe()


def test_the_real_shape_and_the_shorthand_decide_alike(runner: SuiteRunner) -> None:
    base = {"action": "execute_code", "resource": 'Runtime::"sbx-1"', "expect": "allow"}
    shorthand = {"sub": "bob", "act_chain": ["code-runner", "assistant"], "scopes": ["code:execute"]}
    real = {"sub": "bob", "act": {"sub": "code-runner", "act": {"sub": "assistant"}}, "scope": "code:execute"}
    for token in (shorthand, real):
        result = runner.check({**base, "token": {**token, "binding": "dpop", "groups": ["engineering"]}})
        assert (result.passed, result.reason, result.policies) == (True, "allowed", ("code.execute.coders",))


# --- errors name file:line --------------------------------------------------------------------

ERRORS = [
    (
        "unknown case key",
        """\
        cases:
          - name: x
            principal: Agent::"assistant"
            action: read_file
            resource: File::"a"
            expect: deny
            expect_policy: [files.read.as-user]
        """,
        7,
        "a case has no key `expect_policy` (did you mean `expect_policies`?)",
    ),
    (
        "unknown resource key",
        """\
        cases:
          - name: x
            principal: Agent::"assistant"
            action: read_file
            resource:
              type: File
              id: a
              attrs: {owner: bob}
            expect: deny
        """,
        8,
        "`resource` has no key `attrs` (did you mean `attributes`?)",
    ),
    (
        "unknown key in a resource uid",
        """\
        cases:
          - {name: x, principal: Agent::"assistant", action: read_file, resource: {type: File, di: a}, expect: deny}
        """,
        2,
        "`resource` has no key `di`",
    ),
    (
        "context of the wrong type",
        """\
        cases:
          - name: x
            principal: Agent::"assistant"
            action: read_file
            resource: File::"a"

            context: [a, b]
            expect: deny
        """,
        7,
        "`context` must be a mapping",
    ),
    (
        "expect of the wrong value",
        """\
        cases:
          - name: x
            principal: Agent::"assistant"
            action: read_file
            resource: File::"a"
            expect: denied
        """,
        6,
        "`expect` must be allow or deny",
    ),
    (
        "act_chain with act",
        """\
        cases:
          - name: x
            token:
              sub: alice
              act: {sub: assistant}
              act_chain: [assistant]
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        6,
        "`token` gives both `act_chain` and `act`",
    ),
    (
        "scopes with scope",
        """\
        cases:
          - name: x
            token:
              sub: alice
              scopes: [files:read]
              scope: files:read
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        6,
        "`token` gives both `scopes` and `scope`",
    ),
    (
        "scopes with scp",
        """\
        cases:
          - name: x
            token:
              sub: alice
              scp: [files:read]
              scopes: [files:read]
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        6,
        "`token` gives both `scopes` and `scp`",
    ),
    (
        "binding with cnf",
        """\
        cases:
          - name: x
            token:
              sub: alice
              binding: dpop
              cnf: {jkt: abc}
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        6,
        "`token` gives both `binding` and `cnf`",
    ),
    (
        "scope as a list",
        """\
        cases:
          - name: x
            token:
              sub: alice
              scope: [files:read]
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        5,
        "`token.scope` must be a space-separated string",
    ),
    (
        "iat as a date",
        """\
        cases:
          - name: x
            token:
              sub: alice
              client_id: assistant
              iat: 2026-01-01
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        6,
        "`token.iat` must be a number",
    ),
    (
        "a nested act without sub",
        """\
        cases:
          - name: x
            token:
              sub: alice
              act:
                sub: assistant
                act:
                  client: billing-bot
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        8,
        "every `act` in `token` needs `sub`",
    ),
    (
        "act as a string",
        """\
        cases:
          - name: x
            token:
              sub: alice
              act: assistant
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        5,
        "`token.act` must be a mapping",
    ),
    (
        "a string act_chain",
        """\
        cases:
          - name: x
            token:
              sub: alice
              act_chain: assistant
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        5,
        "`token.act_chain` must be a list of strings",
    ),
    (
        "a claim YAML reads as a date",
        """\
        cases:
          - name: x
            token:
              sub: alice
              claims:
                hired: 2020-01-01
            action: read_file
            resource: File::"a"
            expect: deny
        """,
        5,
        "`token.claims.hired` must be a JSON value, got date",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_a_mistake_in_a_case_names_file_and_line(
    runner: SuiteRunner, estate: Path, text: str, line: int, message: str
) -> None:
    (result,) = run(runner, estate, text)
    assert (result.passed, result.decided) == (False, "error")
    (problem,) = result.problems
    assert problem.startswith(f"tests/t.yaml:{line}: invalid case: "), problem
    assert message in problem


def test_the_cli_shows_the_location(estate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, text, line, message = ERRORS[0]
    (estate / "tests" / "cli.yaml").write_text(textwrap.dedent(text))
    try:
        assert main(["test", str(estate)]) == 1
    finally:
        (estate / "tests" / "cli.yaml").unlink()
    out = capsys.readouterr().out
    assert f"tests/cli.yaml:{line}: invalid case: {message}" in out
    assert out.strip().endswith("0 passed, 1 failed")


# --- a deny from invalid_request tests nothing --------------------------------------------------

MISSPELT = """\
cases:
  - name: a misspelt action is not a deny
    principal: Agent::"assistant"
    action: raed_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    context:
      on_behalf_of: {__entity: {type: User, id: alice}}
      delegation: {depth: 1, actors: [], origin: {__entity: {type: Agent, id: assistant}}}
      token: {issuer: "https://idp.example.com", scopes: [files:read], client_id: assistant,
              issued_at: 1798761600, expires_at: 1798762200}
      binding: dpop
    expect: deny
  - name: the same through a token
    token: {sub: alice, act: {sub: assistant}, scope: files:read, binding: dpop, groups: [finance]}
    action: raed_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
  - name: unless the case says that is what it tests
    token: {sub: alice, act: {sub: assistant}, scope: files:read, binding: dpop, groups: [finance]}
    action: raed_file
    resource: File::"finance/reports/q3-forecast.xlsx"
    expect: deny
    expect_reason: invalid_request
"""


def test_a_case_decided_by_invalid_request_fails_unless_it_expects_it(runner: SuiteRunner, estate: Path) -> None:
    principal, token, expected = run(runner, estate, MISSPELT)
    for r in (principal, token):
        assert (r.passed, r.decided, r.reason) == (False, "deny", "invalid_request"), r.describe()
        assert any("decided by invalid_request" in p for p in r.problems)
        assert r.errors and "raed_file" in " ".join(r.errors)
        assert "decision:" not in r.describe()  # the decision matched; the reason is the failure
    assert expected.passed, expected.describe()


def test_the_example_suites_still_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(POLICIES)]) == 0
    assert capsys.readouterr().out.strip().endswith(" 0 failed")


# --- the documented examples run -----------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy-tests.md"


def _doc_suites() -> list[str]:
    text = DOC.read_text()
    return [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]


@pytest.mark.parametrize("text", _doc_suites(), ids=lambda t: t.split("name: ", 1)[1].split("\n", 1)[0][:40])
def test_every_documented_suite_passes(runner: SuiteRunner, estate: Path, text: str) -> None:
    results = run(runner, estate, text)
    assert results
    for r in results:
        assert r.passed, r.describe()


def test_the_documented_invalid_request_failure(runner: SuiteRunner, estate: Path) -> None:
    suite = next(s for s in _doc_suites() if "invalid_request" in s)
    (result,) = run(runner, estate, suite.replace("    expect_reason: invalid_request\n", ""))
    assert result.describe() in DOC.read_text()
