"""Cedar's own conformance corpus, replayed through pep's loader and evaluation layer.

The corpus (`<repo>/../shared/conformance/cedar`, see its README) is a manifest of cases
from cedar-integration-tests and cedar-examples: a policy file, a schema, entities,
optional template links, and requests with Cedar's expected decision, determining
policies and erroring policies. Each case is laid out as a pep policy directory, loaded
with `load_snapshot`, and every request is answered by `evaluate_principal`, the call
`pep test` makes for a principal-style case. Evaluation is non-strict here, as in
Cedar: an erroring policy is skipped rather than turned into a deny.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep.dev.suite import evaluate_principal
from pep.errors import PolicyLoadError, RequestError
from pep.policy.files import ENTITIES_FILE, LINKS_FILE, SCHEMA_FILE
from pep.policy.loader import load_snapshot
from pep.policy.request import ResourceRef
from pep.policy.snapshot import Snapshot
from pep.reasons import Reason

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "conformance" / "cedar"
MANIFEST = CORPUS / "manifest.json"
POLICY_FILE = "policies.cedar"

MISSING = f"Cedar conformance corpus not found at {MANIFEST}"
HAVE_CORPUS = MANIFEST.is_file()
needs_corpus = pytest.mark.skipif(not HAVE_CORPUS, reason=MISSING)

CASES: list[dict[str, Any]] = json.loads(MANIFEST.read_text(encoding="utf-8")) if HAVE_CORPUS else []
PARAMS = [pytest.param(c, id=c["id"]) for c in CASES] or [
    pytest.param(None, id="corpus-absent", marks=pytest.mark.skip(reason=MISSING))
]

_POSITIONAL = re.compile(r"policy(\d+)")
_ERROR_PREFIX = "error while evaluating policy `"


@dataclasses.dataclass(frozen=True)
class Answer:
    """What pep's layer said about one request; `refused` when it would not ask Cedar."""

    allowed: bool = False
    reason: Reason | None = None
    policies: frozenset[str] = frozenset()
    errors: frozenset[str] = frozenset()
    refused: str = ""


def pep_id(case: Mapping[str, Any], cedar_id: str) -> str:
    """A policy id as the manifest spells it, as pep names it."""
    if case["policy_ids"] == "positional":
        m = _POSITIONAL.fullmatch(cedar_id)
        if m:
            return f"{POLICY_FILE}:{m.group(1)}"
    return cedar_id


def erroring_policy(message: str, known: Mapping[str, Any]) -> str:
    """The policy id in a Cedar evaluation error (`error while evaluating policy `<id>`: ...`)."""
    if message.startswith(_ERROR_PREFIX):
        rest = message[len(_ERROR_PREFIX) :]
        # Match against known ids, longest first: an @id may itself contain "`: ".
        for pid in sorted(known, key=len, reverse=True):
            if rest.startswith(pid + "`:"):
                return pid
        return rest.split("`", 1)[0]
    return f"<unattributed: {message}>"


def write_case(case: Mapping[str, Any], directory: Path) -> None:
    """Lay the case out as a pep policy directory."""
    (directory / POLICY_FILE).write_text((CORPUS / case["policies"]).read_text(encoding="utf-8"), encoding="utf-8")
    if case.get("schema"):
        (directory / SCHEMA_FILE).write_text((CORPUS / case["schema"]).read_text(encoding="utf-8"), encoding="utf-8")
    if case.get("entities"):
        (directory / ENTITIES_FILE).write_text(
            (CORPUS / case["entities"]).read_text(encoding="utf-8"), encoding="utf-8"
        )
    if case.get("links"):
        links = json.loads((CORPUS / case["links"]).read_text(encoding="utf-8"))
        entries = [
            {"template": pep_id(case, link["template_id"]), "id": link["link_id"], "values": dict(link["args"])}
            for link in links
        ]
        (directory / LINKS_FILE).write_text(yaml.safe_dump({"links": entries}, sort_keys=False), encoding="utf-8")


def _evaluate(snapshot: Snapshot, request: Mapping[str, Any]) -> Answer:
    principal, action = request["principal"], request["action"]
    try:
        out = evaluate_principal(
            snapshot,
            (principal["type"], principal["id"]),
            (action["type"], action["id"]),
            ResourceRef(request["resource"]["type"], request["resource"]["id"]),
            request.get("context") or {},
            strict=False,
        )
    except (RequestError, ValueError) as e:
        return Answer(refused=str(e))
    errors = frozenset(erroring_policy(e, snapshot.policies) for e in out.errors)
    return Answer(out.allowed, out.reason, frozenset(out.policies), errors)


def _mismatches(case: Mapping[str, Any], request: Mapping[str, Any], answer: Answer) -> list[str]:
    if answer.refused:
        return [f"refused: {answer.refused}"]
    found = []
    if answer.reason is Reason.INVALID_REQUEST:
        found.append(f"Cedar could not build the request: {sorted(answer.errors)}")
    decided = "Allow" if answer.allowed else "Deny"
    if decided != request["decision"]:
        found.append(f"decision: expected {request['decision']}, got {decided}")
    if request.get("reason") is not None:
        want = {pep_id(case, p) for p in request["reason"]}
        if set(answer.policies) != want:
            found.append(f"determining policies: expected {sorted(want)}, got {sorted(answer.policies)}")
    if request.get("errors") is not None:
        want = {pep_id(case, p) for p in request["errors"]}
        if set(answer.errors) != want:
            found.append(f"erroring policies: expected {sorted(want)}, got {sorted(answer.errors)}")
    return found


def _load(directory: Path, **options: bool) -> tuple[Snapshot | None, PolicyLoadError | None]:
    try:
        return load_snapshot(str(directory), **options), None
    except PolicyLoadError as e:
        return None, e


def _run_case(case: Mapping[str, Any], directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (what, mismatches) for the load checks and then every request."""
    write_case(case, directory)
    with_schema = bool(case["authorize_with_schema"])
    # What `pep validate` checks: the policies against the schema.
    validated, rejection = _load(directory, schema_for_entities=with_schema)
    if case["should_validate"]:
        if rejection is not None:
            yield "load with validation", [f"expected to validate, got:\n{rejection}"]
            return
    else:
        if rejection is None:
            yield "load with validation", ["expected schema validation to reject the policies, but it loaded"]
        else:
            other = [str(p) for p in rejection.problems if not p.message.startswith("schema validation")]
            if other:
                yield "load with validation", ["rejected for reasons other than schema validation:", *other]
        validated, rejection = _load(directory, validate_policies=False, schema_for_entities=with_schema)
        if rejection is not None:
            yield "load without validation", [str(rejection)]
            return
    assert validated is not None
    without_schema = dataclasses.replace(validated, schema=None)
    for i, request in enumerate(case["requests"]):
        snapshot = validated if with_schema and request["validate_request"] else without_schema
        what = f"request {i} ({request.get('description', '')})"
        yield what, _mismatches(case, request, _evaluate(snapshot, request))


def _describe(case_id: str, failures: list[tuple[str, list[str]]], total: int) -> str:
    lines = [f"{case_id}: {len(failures)} of {total} checks disagree with Cedar"]
    for what, problems in failures:
        lines.append(f"  {what}")
        lines += [f"    {p}" for p in problems]
    return "\n".join(lines)


@pytest.mark.parametrize("case", PARAMS)
def test_cedar_conformance(case: dict[str, Any], tmp_path: Path) -> None:
    results = list(_run_case(case, tmp_path))
    failures = [(what, problems) for what, problems in results if problems]
    assert not failures, _describe(case["id"], failures, len(results))


@needs_corpus
def test_corpus_covers_what_it_claims() -> None:
    requests = [r for c in CASES for r in c["requests"]]
    assert len(CASES) >= 250 and len(requests) >= 2000
    assert any(not c["should_validate"] for c in CASES)
    assert any(c["links"] for c in CASES)
    assert any(c["policy_ids"] == "annotation" for c in CASES)
    assert any(not c["authorize_with_schema"] for c in CASES)
    assert {"Allow", "Deny"} <= {r["decision"] for r in requests}


def test_an_erroring_policy_is_skipped_not_a_deny(tmp_path: Path) -> None:
    # Not from the corpus: none of its erroring requests is an Allow, so this pins down the
    # non-strict reading the corpus relies on (and that strict pep would turn into a deny).
    (tmp_path / POLICY_FILE).write_text(
        "permit(principal, action, resource) when { principal.missing };\n"
        '@id("plain") permit(principal, action, resource);\n',
        encoding="utf-8",
    )
    snapshot = load_snapshot(str(tmp_path))
    request = {
        "principal": {"type": "User", "id": "u"},
        "action": {"type": "Action", "id": "a"},
        "resource": {"type": "Doc", "id": "d"},
    }
    answer = _evaluate(snapshot, request)
    assert answer == Answer(True, Reason.ALLOWED, frozenset({"plain"}), frozenset({f"{POLICY_FILE}:0"}))
