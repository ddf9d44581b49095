"""The AuthZEN API on a trust_subject listener: metadata, errors, limits, batch semantics,
the decision log and metrics. Every test asserts what is answered, not just the status."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pep.config import parse_config
from pep.errors import ConfigError
from tests.harness.authzen import PIDS, Client, Pep

MORTY, BETH = PIDS["morty"], PIDS["beth"]


def user(pid: str, **properties: Any) -> dict[str, Any]:
    return {"type": "user", "id": pid, **({"properties": properties} if properties else {})}


def todo_of(owner: str, id_: str = "t1") -> dict[str, Any]:
    return {"type": "todo", "id": id_, "properties": {"ownerID": owner}}


def update(pid: str, owner: str, **extra: Any) -> dict[str, Any]:
    return {"subject": user(pid), "action": {"name": "can_update_todo"}, "resource": todo_of(owner), **extra}


# --- metadata and routing -------------------------------------------------------------------


def test_metadata_document(todo: Pep) -> None:
    r = todo.client.request("GET", "/.well-known/authzen-configuration")
    base = f"http://{todo.server.authzen_address}"
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert r.body == {
        "policy_decision_point": base,
        "access_evaluation_endpoint": base + "/access/v1/evaluation",
        "access_evaluations_endpoint": base + "/access/v1/evaluations",
    }


def test_metadata_uses_the_configured_base_url(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(base_url="https://pdp.example.com/")
    body = pep.client.request("GET", "/.well-known/authzen-configuration").body
    assert body["policy_decision_point"] == "https://pdp.example.com"
    assert body["access_evaluations_endpoint"] == "https://pdp.example.com/access/v1/evaluations"


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("POST", "/.well-known/authzen-configuration", 405, "GET"),
        ("GET", "/access/v1/evaluation", 405, "POST"),
        ("PUT", "/access/v1/evaluations", 405, "POST"),
        ("POST", "/access/v1/search/subject", 404, None),
        ("GET", "/", 404, None),
    ],
)
def test_routing_errors_are_json(todo: Pep, method: str, path: str, status: int, allow: str | None) -> None:
    r = todo.client.request(method, path, b"{}", {"Content-Type": "application/json"})
    assert r.status == status
    assert r.body["error"]["status"] == status
    assert r.headers.get("allow") == allow


# --- malformed requests: 400 with a JSON body, nothing decided -----------------------------------

MALFORMED = [
    (b'{"subject":', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"subject": {"type": "user", "id": "a"}, "subject": {"type": "user", "id": "b"}}', "duplicate member"),
    (b'{"context": {"n": NaN}}', "NaN is not JSON"),
    (b'{"action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "1"}}', "subject is required"),
    (b'{"subject": {"type": "user"}, "action": {"name": "x"}, "resource": {"type": "t", "id": "1"}}', "subject.id"),
    (b'{"subject": {"type": "user", "id": 7}, "action": {"name": "x"}, "resource": {"type": "t", "id": "1"}}', "id"),
    (b'{"subject": {"type": "user", "id": "a"}, "resource": {"type": "t", "id": "1"}}', "action is required"),
    (b'{"subject": {"type": "user", "id": "a"}, "action": {}, "resource": {"type": "t", "id": "1"}}', "action.name"),
    (b'{"subject": {"type": "user", "id": "a"}, "action": {"name": "x"}}', "resource is required"),
    (b'{"subject": {"type": "user", "id": "a"}, "action": {"name": "x"}, "resource": "t:1"}', "JSON object"),
    (
        b'{"subject": {"type": "user", "id": "a"}, "action": {"name": "x"}, "resource": {"type": "t", "id": "1"},'
        b' "context": [1]}',
        "context must be a JSON object",
    ),
    (
        b'{"subject": {"type": "user", "id": "a", "properties": 3}, "action": {"name": "x"},'
        b' "resource": {"type": "t", "id": "1"}}',
        "subject.properties",
    ),
    (
        b'{"subject": {"type": "user", "id": "a"}, "action": {"name": "x", "properties": {"method": "GET"}},'
        b' "resource": {"type": "t", "id": "1"}}',
        "action.properties is not supported",
    ),
    (b"[" * 6000 + b"]" * 6000, "nests too deeply"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_evaluation_is_a_json_400(todo: Pep, body: bytes, message: str) -> None:
    before = len(todo.log_lines())
    r = todo.client.evaluation(body)
    assert r.status == 400, r.body
    assert r.body["error"]["status"] == 400
    assert message in r.body["error"]["message"]
    assert len(todo.log_lines()) == before  # nothing was decided


BATCH_MALFORMED = [
    ({"evaluations": {"resource": {}}}, "evaluations must be an array"),
    ({"evaluations": [1]}, "evaluations[0] must be a JSON object"),
    (
        {"subject": user(MORTY), "action": {"name": "can_read_todos"}, "evaluations": [{}, {"resource": {}}]},
        "evaluations[0].resource is required (in the item or at the top level)",
    ),
    (
        {**update(MORTY, "x"), "options": {"evaluations_semantic": "first_wins"}, "evaluations": [{}]},
        "options.evaluations_semantic must be one of",
    ),
    ({**update(MORTY, "x"), "options": [], "evaluations": [{}]}, "options must be a JSON object"),
    ({**update(MORTY, "x"), "evaluations": [{}] * 51}, "at most 50 evaluations"),
]


@pytest.mark.parametrize(("body", "message"), BATCH_MALFORMED, ids=[m[:30] for _, m in BATCH_MALFORMED])
def test_malformed_evaluations_is_a_json_400(todo: Pep, body: Any, message: str) -> None:
    r = todo.client.evaluations(body)
    assert r.status == 400, r.body
    assert message in r.body["error"]["message"]


def test_the_body_must_be_declared_json(todo: Pep) -> None:
    body = b'{"subject": {"type": "user", "id": "a"}}'
    r = todo.client.request("POST", "/access/v1/evaluation", body, {"Content-Type": "text/plain"})
    assert r.status == 415
    assert "application/json" in r.body["error"]["message"]
    ok = todo.client.post(
        "/access/v1/evaluation", update(MORTY, "x"), {"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status == 200


# --- size limits --------------------------------------------------------------------------------


def test_an_oversize_body_is_refused_before_it_is_read(todo: Pep) -> None:
    big = update(MORTY, "morty@the-citadel.com", context={"pad": "x" * 17_000})
    r = todo.client.evaluation(big)
    assert r.status == 413
    assert r.body["error"] == {"status": 413, "message": "the body is larger than 16384 bytes"}
    assert r.headers["connection"] == "close"


def test_an_oversize_chunked_body_is_refused(todo: Pep) -> None:
    host, _, port = todo.server.authzen_address.rpartition(":")
    payload = b'{"pad": "' + b"x" * 20_000 + b'"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    head = (
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: pep\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + chunked)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b'"the body is larger than 16384 bytes"' in reply


def test_a_body_at_the_limit_is_accepted(todo: Pep) -> None:
    body = update(MORTY, "morty@the-citadel.com", padding="")  # members AuthZEN does not define are ignored
    body["padding"] = "x" * (16 * 1024 - len(json.dumps(body).encode()))
    assert len(json.dumps(body).encode()) == 16 * 1024
    r = todo.client.evaluation(body)
    assert r.status == 200 and r.body["decision"] is True


# --- decisions ------------------------------------------------------------------------------------


def test_the_response_context_explains_the_decision(todo: Pep) -> None:
    allow = todo.client.evaluation(update(MORTY, "morty@the-citadel.com"))
    deny = todo.client.evaluation(update(MORTY, "rick@the-citadel.com"))
    assert allow.body["decision"] is True
    ctx = allow.body["context"]
    assert (ctx["reason"], ctx["policies"]) == ("allowed", ["todo-editors-own"])
    assert len(ctx["decision_id"]) == 36 and ctx["policy_version"]
    assert "agent" not in ctx  # no token: no resolved identity to report
    assert deny.body == {
        "decision": False,
        "context": {
            "reason": "policy_no_permit",
            "policies": [],
            "decision_id": deny.body["context"]["decision_id"],
            "policy_version": ctx["policy_version"],
        },
    }


def test_subject_properties_are_merged_over_the_stored_entity(todo: Pep) -> None:
    # Morty keeps his stored roles (parents) while the email the caller sends wins.
    body = update(MORTY, "rick@the-citadel.com")
    assert todo.client.evaluation(body).body["decision"] is False
    body["subject"]["properties"] = {"email": "rick@the-citadel.com"}
    r = todo.client.evaluation(body)
    assert (r.body["decision"], r.body["context"]["policies"]) == (True, ["todo-editors-own"])
    # A subject the store does not hold gets only what is sent: no roles, no permit.
    stranger = update("stranger", "x@y", subject={"type": "user", "id": "stranger", "properties": {"email": "x@y"}})
    assert todo.client.evaluation(stranger).body["context"]["reason"] == "policy_no_permit"


def test_resource_properties_merge_over_a_stored_resource(pep_factory: Callable[..., Pep]) -> None:
    def add_stored_todo(root: Path) -> None:
        entities = json.loads((root / "entities.json").read_text())
        entities.append(
            {"uid": {"type": "todo", "id": "stored"}, "attrs": {"ownerID": "rick@the-citadel.com"}, "parents": []}
        )
        (root / "entities.json").write_text(json.dumps(entities))

    pep = pep_factory(add_stored_todo)
    body = {"subject": user(MORTY), "action": {"name": "can_delete_todo"}, "resource": {"type": "todo", "id": "stored"}}
    assert pep.client.evaluation(body).body["decision"] is False  # the store says Rick owns it
    body["resource"]["properties"] = {"ownerID": "morty@the-citadel.com"}
    assert pep.client.evaluation(body).body["decision"] is True


def test_a_bad_value_in_one_evaluation_fails_only_that_one(todo: Pep) -> None:
    body = {
        **update(MORTY, "morty@the-citadel.com"),
        "evaluations": [{}, {"context": {"amount": 1.5}}, {}],
    }
    r = todo.client.evaluations(body)
    assert r.status == 200
    first, bad, last = r.body["evaluations"]
    assert first["decision"] is True and last["decision"] is True
    assert bad["decision"] is False
    assert bad["context"]["reason"] == "invalid_request"
    assert bad["context"]["error"]["status"] == 400
    assert "not a whole number" in bad["context"]["error"]["message"]
    single = todo.client.evaluation({**update(MORTY, "morty@the-citadel.com"), "context": {"amount": 1.5}})
    assert single.status == 400 and "not a whole number" in single.body["error"]["message"]


def test_reserved_context_keys_are_refused(todo: Pep) -> None:
    r = todo.client.evaluation({**update(MORTY, "morty@the-citadel.com"), "context": {"token": {"issuer": "me"}}})
    assert r.status == 400
    assert "'token' is reserved" in r.body["error"]["message"]


# --- batches ----------------------------------------------------------------------------------------

# Morty: his own todo (permit), Rick's (deny), his own again (permit).
SEQUENCE = [
    todo_of("morty@the-citadel.com", "1"),
    todo_of("rick@the-citadel.com", "2"),
    todo_of("morty@the-citadel.com", "3"),
]


def batch(semantic: str | None, resources: list[dict[str, Any]] = SEQUENCE) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": user(MORTY),
        "action": {"name": "can_update_todo"},
        "evaluations": [{"resource": r} for r in resources],
    }
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic, "another_option": "ignored"}
    return body


@pytest.mark.parametrize(
    ("semantic", "resources", "expected"),
    [
        (None, SEQUENCE, [True, False, True]),
        ("execute_all", SEQUENCE, [True, False, True]),
        ("deny_on_first_deny", SEQUENCE, [True, False]),
        ("deny_on_first_deny", [SEQUENCE[0], SEQUENCE[2]], [True, True]),
        ("permit_on_first_permit", SEQUENCE, [True]),
        ("permit_on_first_permit", [SEQUENCE[1], SEQUENCE[1], SEQUENCE[2]], [False, False, True]),
        ("permit_on_first_permit", [SEQUENCE[1]], [False]),
    ],
)
def test_evaluations_semantics(
    todo: Pep, semantic: str | None, resources: list[dict[str, Any]], expected: list[bool]
) -> None:
    request_id = f"semantics-{semantic}-{len(resources)}-{expected}"
    r = todo.client.evaluations(batch(semantic, resources), **{"X-Request-ID": request_id})
    assert r.status == 200
    assert [e["decision"] for e in r.body["evaluations"]] == expected
    # Only what was evaluated is logged: a short-circuited batch stops deciding.
    logged = todo.logged(request_id, len(expected))
    assert [e["decision"] == "allow" for e in logged] == expected
    assert [e["resource"]["id"] for e in logged] == [r["id"] for r in resources[: len(expected)]]


def test_items_override_the_top_level_defaults(todo: Pep) -> None:
    body = {
        "subject": user(BETH),
        "action": {"name": "can_read_todos"},
        "resource": {"type": "todo", "id": "default"},
        "evaluations": [
            {},  # all defaults: Beth reads a todo
            {"action": {"name": "can_create_todo"}},  # Beth (viewer) may not create
            {"subject": user(MORTY), "action": {"name": "can_create_todo"}},  # Morty (editor) may
            {"subject": user(MORTY), "action": {"name": "can_read_user"}, "resource": {"type": "user", "id": "x"}},
        ],
    }
    r = todo.client.evaluations(body, **{"X-Request-ID": "defaults"})
    assert [e["decision"] for e in r.body["evaluations"]] == [True, False, True, True]
    logged = todo.logged("defaults", 4)
    assert [(e["on_behalf_of"], e["action"], e["resource"]["type"]) for e in logged] == [
        (BETH, "can_read_todos", "todo"),
        (BETH, "can_create_todo", "todo"),
        (MORTY, "can_create_todo", "todo"),
        (MORTY, "can_read_user", "user"),
    ]


def test_evaluations_without_an_array_is_a_single_evaluation(todo: Pep) -> None:
    for body in (update(MORTY, "morty@the-citadel.com"), {**update(MORTY, "morty@the-citadel.com"), "evaluations": []}):
        r = todo.client.evaluations(body)
        assert r.status == 200
        assert r.body["decision"] is True and "evaluations" not in r.body


# --- the decision log and metrics -------------------------------------------------------------------


def test_decisions_are_logged_and_counted_like_grpc_ones(todo: Pep) -> None:
    allow_before = todo.decisions_total("allow", "allowed", "can_update_todo")
    deny_before = todo.decisions_total("deny", "policy_no_permit", "can_update_todo")
    headers = {"X-Request-ID": "log-check", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    r = todo.client.evaluations(batch("execute_all"), **headers)
    assert r.headers["x-request-id"] == "log-check"
    assert todo.decisions_total("allow", "allowed", "can_update_todo") == allow_before + 2
    assert todo.decisions_total("deny", "policy_no_permit", "can_update_todo") == deny_before + 1
    logged = todo.logged("log-check", 3)
    assert [e["decision_id"] for e in logged] == [e["context"]["decision_id"] for e in r.body["evaluations"]]
    entry = logged[0]
    assert entry["traceparent"] == headers["traceparent"]
    assert (entry["agent"], entry["on_behalf_of"], entry["delegation_chain"]) == ("", MORTY, [])
    assert (entry["action"], entry["resource"], entry["binding"]) == (
        "can_update_todo",
        {"type": "todo", "id": "1"},
        "",
    )
    assert (entry["decision"], entry["reason"], entry["policies"]) == ("allow", "allowed", ["todo-editors-own"])
    assert entry["policy_version"] == r.body["evaluations"][0]["context"]["policy_version"]


def test_an_overlong_request_id_is_refused(todo: Pep) -> None:
    r = todo.client.evaluation(update(MORTY, "x"), **{"X-Request-ID": "x" * 257})
    assert r.status == 400 and "X-Request-ID" in r.body["error"]["message"]


# --- controls, faults, listeners ------------------------------------------------------------------


def test_the_kill_switch_applies_to_a_trusted_subject(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(lambda root: (root / "killswitch.yaml").write_text(f"disabled:\n  users: [{MORTY}]\n"))
    r = pep.client.evaluation(update(MORTY, "morty@the-citadel.com"))
    assert (r.status, r.body["decision"], r.body["context"]["reason"]) == (200, False, "agent_disabled")
    assert pep.client.evaluation({**update(BETH, "x"), "action": {"name": "can_read_todos"}}).body["decision"] is True


def test_no_policy_loaded_is_a_503(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(lambda root: (root / "broken.cedar").write_text("permit(principal,"))
    r = pep.client.evaluation(update(MORTY, "morty@the-citadel.com"))
    assert r.status == 503
    assert r.body["error"] == {"status": 503, "message": "no valid policy set is loaded"}
    assert pep.client.evaluations(batch(None)).status == 503


def test_a_unix_socket_listener_is_private_to_its_owner_and_group(
    pep_factory: Callable[..., Pep], tmp_path: Path
) -> None:
    path = tmp_path / "sock" / "authzen.sock"
    pep = pep_factory(listen=f"unix://{path}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    client = Client(f"unix://{path}")
    assert client.evaluation(update(MORTY, "morty@the-citadel.com")).body["decision"] is True
    meta = client.request("GET", "/.well-known/authzen-configuration").body
    assert meta["policy_decision_point"] == "http://localhost"
    assert pep.server.authzen_address == f"unix://{path}"


@pytest.mark.parametrize(
    ("authzen", "problem"),
    [
        ({"listen": "0.0.0.0:8080", "trust_subject": True}, "authzen.trust_subject: 0.0.0.0:8080 is not a loopback"),
        ({"listen": "10.1.2.3:8080", "trust_subject": True}, "is not a loopback address or Unix socket"),
        ({"trust_subject": True}, "authzen.trust_subject: needs authzen.listen"),
        ({"listen": "127.0.0.1:8080", "max_body_bytes": 0}, "authzen.max_body_bytes: must be at least 1"),
        ({"listen": "127.0.0.1:8080", "base_url": "pdp.example.com"}, "authzen.base_url"),
        ({"listen": "127.0.0.1:8080", "tls": True}, "authzen.tls: unknown key"),
    ],
)
def test_config_errors(authzen: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"authzen": authzen})
    assert problem in str(err.value)


def test_config_accepts_local_trusted_listeners() -> None:
    for listen in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "unix:///run/pep/authzen.sock"):
        assert parse_config({"authzen": {"listen": listen, "trust_subject": True}}).authzen.trust_subject
    assert parse_config({"authzen": {"listen": "0.0.0.0:8080"}}).authzen.listen == "0.0.0.0:8080"
    assert parse_config({}).authzen.listen == ""  # off unless configured
