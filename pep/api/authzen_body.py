"""AuthZEN request bodies: strict JSON to the subjects and checks pep evaluates (README, "AuthZEN")."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pep.errors import RequestError
from pep.pipeline import Subject
from pep.policy.request import Check, ResourceRef

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


class HTTPError(RequestError):
    """A request pep cannot judge: answered with `status` and a JSON error body."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


# --- request parsing ---------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(body: bytes) -> Any:
    """The request body as JSON, or a 400 saying why not. NaN, Infinity and duplicate members are refused."""
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8") from None
    except RecursionError:
        raise bad_request("the body nests too deeply") from None
    except ValueError as e:
        raise bad_request(f"the body is not valid JSON: {e}") from None


def _object(value: Any, where: str, *, required: bool) -> dict[str, Any] | None:
    """A JSON object member; null counts as absent."""
    if value is None:
        if required:
            raise bad_request(f"{where} is required")
        return None
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be a JSON object")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where}.{key} is required and must be a non-empty string")
    return value


def _entity(value: Any, where: str) -> tuple[str, str, dict[str, Any] | None]:
    obj = _object(value, where, required=True)
    assert obj is not None
    properties = _object(obj.get("properties"), f"{where}.properties", required=False)
    return _string(obj, "type", where), _string(obj, "id", where), properties


def parse_evaluation(request: Mapping[str, Any], where: str = "") -> tuple[Subject, Check]:
    """One AuthZEN 4-tuple as the subject and the check pep evaluates (README, "Mapping to Cedar")."""
    prefix = f"{where}." if where else ""
    stype, sid, sprops = _entity(request.get("subject"), f"{prefix}subject")
    action = _object(request.get("action"), f"{prefix}action", required=True)
    assert action is not None
    name = _string(action, "name", f"{prefix}action")
    if _object(action.get("properties"), f"{prefix}action.properties", required=False):
        raise bad_request(f"{prefix}action.properties is not supported: a Cedar action has no attributes; use context")
    rtype, rid, rprops = _entity(request.get("resource"), f"{prefix}resource")
    context = _object(request.get("context"), f"{prefix}context", required=False) or {}
    check = Check(action=name, resource=ResourceRef(rtype, rid, attributes=rprops), context=context)
    return Subject(stype, sid, sprops), check


@dataclass(frozen=True)
class ParsedRequest:
    subjects: list[Subject]
    checks: list[Check]
    # True for an `evaluations` array (answered as one), False for a single evaluation.
    batch: bool
    semantic: str = "execute_all"


def parse_request(body: Any, *, batch_endpoint: bool, max_evaluations: int) -> ParsedRequest:
    """Parse either endpoint's body. `evaluations` absent or empty: a single evaluation (spec 7.1)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    items = body.get("evaluations") if batch_endpoint else None
    if items is None or items == []:
        subject, check = parse_evaluation(body)
        return ParsedRequest([subject], [check], batch=False)
    if not isinstance(items, list):
        raise bad_request("evaluations must be an array")
    if len(items) > max_evaluations:
        raise bad_request(f"at most {max_evaluations} evaluations per request, got {len(items)}")
    options = _object(body.get("options"), "options", required=False) or {}
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise bad_request(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}, got {semantic!r}")
    subjects, checks = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad_request(f"evaluations[{i}] must be a JSON object")
        # A member given in the item replaces the top-level default whole (spec 7.1.1).
        merged = {k: item[k] if item.get(k) is not None else body.get(k) for k in ("subject", "action", "resource")}
        merged["context"] = item.get("context") if item.get("context") is not None else body.get("context")
        try:
            subject, check = parse_evaluation(merged, f"evaluations[{i}]")
        except HTTPError as e:
            raise bad_request(f"{e.message} (in the item or at the top level)") from None
        subjects.append(subject)
        checks.append(check)
    return ParsedRequest(subjects, checks, batch=True, semantic=semantic)


# --- responses ------------------------------------------------------------------------------
