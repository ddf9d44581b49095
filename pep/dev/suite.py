"""Policy test suites (docs/policy-tests.md): YAML cases run against a policy directory.

A case names a `principal` (a direct Cedar query with a complete context) or `token`
claims, which are minted by a throwaway issuer and run through the whole pipeline:
token checks, chain rules, lifecycle, delegation grants, then the policies.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pep.api.mcp_rpc import SERVER as MCP_SERVER
from pep.api.mcp_rpc import argument_value
from pep.config import Config, IssuerConfig
from pep.controls.admit import Controls
from pep.decision import Outcome
from pep.dev.suite_cases import CaseError, TokenCase, parse_case, parse_uid
from pep.errors import PolicyLoadError, SourceProblem
from pep.pipeline import Pipeline, Request
from pep.pipeline.record import Recorder
from pep.policy.evaluate import Query, evaluate, outcome_of, roots_of
from pep.policy.loader import load_snapshot
from pep.policy.request import Check, ResourceRef, entity_delta, resource_entity
from pep.policy.snapshot import Snapshot
from pep.policy.source import SourceProblemError, key_line, line_of, load_yaml
from pep.reasons import Reason
from pep.tokens.jws import b64url_encode
from pep.tokens.verifier import Credentials, TokenVerifier

__all__ = ["CaseResult", "SuiteRunner", "evaluate_principal", "parse_uid", "summarize"]

TESTS_DIR = "tests"
_ISSUER = "https://pep-test.invalid"
_AUDIENCE = "pep-test"
_HTU = "https://pep.invalid/pep.v1.Authorizer/Authorize"


@dataclass(frozen=True)
class CaseResult:
    suite: str
    name: str
    line: int
    passed: bool
    expected: str
    decided: str
    reason: str = ""
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def describe(self) -> str:
        head = f"FAIL {self.suite}:{self.line}: {self.name}"
        lines = [head, f"  expected {self.expected}, decided {self.decided} (reason {self.reason or '-'})"]
        lines += [f"  {p}" for p in self.problems]
        lines.append(f"  determining policies: {', '.join(self.policies) or '(none)'}")
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


def evaluate_principal(
    snapshot: Snapshot,
    principal: tuple[str, str],
    action: tuple[str, str],
    resource: ResourceRef,
    context: Mapping[str, Any],
    *,
    strict: bool = True,
    use_schema: bool = True,
) -> Outcome:
    query = Query(principal, action, (resource.type, resource.id), dict(context))
    delta = entity_delta([resource_entity(resource, snapshot.entity_index)])
    entities = snapshot.entities_for(roots_of([query]), delta)
    return outcome_of(evaluate(snapshot, [query], entities, schema=use_schema)[0], strict=strict)


class _Fixed:
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def current(self) -> Snapshot:
        return self._snapshot


def _pipeline(config: Config, snapshot: Snapshot, verifier: TokenVerifier) -> Pipeline:
    """The server's pipeline over one snapshot, with nothing logged or counted."""
    recorder = Recorder(None, None, mode=config.mode)
    return Pipeline(
        _Fixed(snapshot), verifier, Controls(), recorder, delegation=config.delegation, identity=config.identity
    )


class SuiteRunner:
    """Runs every suite of a directory; owns a throwaway issuer for token cases."""

    def __init__(self, directory: str, config: Config | None = None) -> None:
        from pep.dev import tokens as devtoken

        self.directory = directory
        self.snapshot = load_snapshot(directory)
        self._tmp = tempfile.TemporaryDirectory(prefix="pep-test-")
        self._key_path, jwks_path = devtoken.ensure_dev_keys(self._tmp.name)
        base = config or Config()
        issuer = IssuerConfig(_ISSUER, (_AUDIENCE,), ("ES256",), jwks_file=jwks_path)
        self._config = dataclasses.replace(base, issuers=(issuer,), policies=directory)
        self._verifier = TokenVerifier(self._config.issuers, self._config.tokens)

    def close(self) -> None:
        self._verifier.close()
        self._tmp.cleanup()

    def suites(self) -> list[str]:
        root = os.path.join(self.directory, TESTS_DIR)
        if not os.path.isdir(root):
            return []
        return sorted(
            os.path.join(TESTS_DIR, n)
            for n in os.listdir(root)
            if n.endswith((".yaml", ".yml")) and not n.startswith(".")
        )

    def run(self, name_filter: str | None = None) -> Iterator[CaseResult]:
        for rel in self.suites():
            yield from self.run_suite(rel, name_filter)

    def run_suite(self, rel: str, name_filter: str | None = None) -> Iterator[CaseResult]:
        data = _load_suite(os.path.join(self.directory, rel), rel)
        if not isinstance(data, Mapping) or not isinstance(data.get("cases"), list):
            raise PolicyLoadError([SourceProblem(rel, "a suite needs a `cases` list", line_of(data))])
        snapshot = self.snapshot
        extra = data.get("entities")
        if extra:
            try:
                if not isinstance(extra, list):
                    raise ValueError("`entities` must be a list of Cedar JSON entities")
                index = snapshot.entity_index.with_added(extra)
                index.handle(index.uids)  # parse them all once, so a bad one is reported here
            except (ValueError, TypeError) as e:
                where = key_line(data, "entities")
                raise PolicyLoadError([SourceProblem(rel, f"suite entities: {e}", where)]) from None
            snapshot = dataclasses.replace(snapshot, entity_index=index)
        authorizer = _pipeline(self._config, snapshot, self._verifier)
        for i, case in enumerate(data["cases"]):
            given = case.get("name") if isinstance(case, Mapping) else None
            name = given if isinstance(given, str) else f"case {i}"
            if name_filter and name_filter.lower() not in name.lower():
                continue
            yield self._run_case(rel, name, case, snapshot, authorizer)

    def check(self, case: Mapping[str, Any]) -> CaseResult:
        """One ad-hoc case against the directory (what `pep check` runs)."""
        authorizer = _pipeline(self._config, self.snapshot, self._verifier)
        return self._run_case("<check>", "check", case, self.snapshot, authorizer)

    def _run_case(self, rel: str, name: str, case: Any, snapshot: Snapshot, authorizer: Pipeline) -> CaseResult:
        line = line_of(case)
        try:
            parsed = parse_case(case)
            resource, context, validate = _as_mcp(parsed.mcp, parsed.resource, parsed.context)
            if parsed.principal is not None:
                out = evaluate_principal(
                    snapshot, parsed.principal, parsed.action, resource, context, use_schema=validate
                )
                allowed, reason, policies, errors = out.allowed, out.reason.value, out.policies, out.errors
            else:
                assert parsed.token is not None
                check = Check(parsed.action[1], resource, dict(context))
                allowed, reason, policies, errors = self._through_pipeline(authorizer, parsed.token, check, validate)
        except (ValueError, TypeError, KeyError, RecursionError) as e:
            expect = case.get("expect") if isinstance(case, Mapping) else None
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            at = (e.line if isinstance(e, CaseError) else 0) or line
            where = "" if rel == "<check>" else f"{rel}:{at}: "
            return CaseResult(
                rel,
                name,
                line,
                False,
                expect if expect in ("allow", "deny") else "?",
                "error",
                problems=(f"{where}invalid case: {why}",),
            )
        expected = parsed.expect
        decided = "allow" if allowed else "deny"
        problems = []
        if decided != expected:
            problems.append(f"decision: expected {expected}, got {decided}")
        if parsed.reason is not None and parsed.reason != reason:
            problems.append(f"reason: expected {parsed.reason}, got {reason}")
        elif reason == Reason.INVALID_REQUEST.value and parsed.reason is None:
            # A misspelt action or a context the schema refuses: the deny tests nothing.
            problems.append(
                "decided by invalid_request (the request does not fit the schema; see the errors below): "
                "add `expect_reason: invalid_request` if that is what this case tests"
            )
        if parsed.policies is not None and set(parsed.policies) != set(policies):
            problems.append(f"policies: expected {sorted(parsed.policies)}, got {sorted(policies)}")
        return CaseResult(rel, name, line, not problems, expected, decided, reason, policies, errors, tuple(problems))

    def _through_pipeline(
        self, authorizer: Pipeline, spec: TokenCase, check: Check, validate: bool = True
    ) -> tuple[bool, str, tuple[str, ...], tuple[str, ...]]:
        from pep.dev import tokens as devtoken

        dpop_key = jwk = None
        thumbprint = ""
        if spec.binding == "dpop":
            dpop_key, jwk = devtoken.new_dpop_key()
        elif spec.binding == "mtls":
            thumbprint = b64url_encode(secrets.token_bytes(32))
        elif not spec.binding:  # `cnf` given as a claim: its certificate thumbprint is presented
            cnf = spec.claims.get("cnf")
            given = cnf.get("x5t#S256") if isinstance(cnf, Mapping) else None
            thumbprint = given if isinstance(given, str) else ""
        token = devtoken.mint_token(
            self._key_path,
            issuer=_ISSUER,
            audience=_AUDIENCE,
            sub=spec.sub,
            act_chain=spec.act_chain,
            client_id=spec.client_id,
            scopes=spec.scopes,
            extra_claims=spec.claims,
            dpop_jkt=devtoken.jwk_thumbprint(jwk) if jwk is not None else None,
            x5t_s256=thumbprint if spec.binding == "mtls" else None,
        )
        creds = Credentials(token=token, client_cert_thumbprint=thumbprint)
        if dpop_key is not None and jwk is not None:
            proof = devtoken.mint_dpop_proof(dpop_key, jwk, htm="POST", htu=_HTU, access_token=token)
            creds = Credentials("DPoP " + token, proof, "POST", _HTU)
        decision = authorizer.authorize(Request([check], creds, validate_context=validate))[0]
        if decision.fault is not None:
            raise ValueError(f"malformed request: {'; '.join(decision.errors)}")
        return decision.allowed, decision.reason.value, decision.policies, decision.errors


def _as_mcp(
    server_id: Any, resource: ResourceRef, context: Mapping[str, Any]
) -> tuple[ResourceRef, Mapping[str, Any], bool]:
    """A case with `mcp: <server_id>` is asked as the MCP proxy asks: the resource in the server
    unless the store places it, `context.arguments` by the proxy's argument rule, no request validation."""
    if server_id is None:
        return resource, context, True
    if not isinstance(server_id, str) or not server_id:
        raise ValueError("`mcp` must be the proxy's server_id, a non-empty string")
    parents = resource.parents or ((MCP_SERVER, server_id),)
    resource = ResourceRef(resource.type, resource.id, resource.attributes, parents, implied=True)
    if "arguments" in context:
        if not isinstance(context["arguments"], Mapping):
            raise ValueError("`context.arguments` must be a mapping")
        context = {**context, "arguments": argument_value(dict(context["arguments"]))}
    return resource, context, False


def _load_suite(path: str, rel: str) -> Any:
    """A suite file's YAML; anything unreadable is a located problem, never a crash."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        return load_yaml(text, rel)
    except SourceProblemError as e:
        problem = e.problem
    except UnicodeDecodeError as e:
        problem = SourceProblem(rel, f"not UTF-8 (byte {e.start})")
    except OSError as e:
        problem = SourceProblem(rel, f"cannot read: {e.strerror or e}")
    except RecursionError:
        problem = SourceProblem(rel, "nested too deeply to read")
    raise PolicyLoadError([problem]) from None


def summarize(results: Sequence[CaseResult]) -> str:
    passed = sum(1 for r in results if r.passed)
    return f"{passed} passed, {len(results) - passed} failed"
