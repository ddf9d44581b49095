"""Revocation against a running server: each key (jti, agent, user, issuer) from killswitch.yaml
and from the admin API and `pep admin revoke`; a past `--before` leaves newer tokens working; a
token verified and cached before the revoke is denied on its next call; status and unrevoke."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pep._proto.pep.v1 import admin_pb2 as apb
from pep._proto.pep.v1 import admin_pb2_grpc
from pep.cli import main
from pep.dev import tokens as devtoken
from pep.policy.revoked_file import format_time
from tests.harness import forge
from tests.harness.estate import write_estate
from tests.harness.server import ISSUER, Harness
from tests.harness.waits import metrics_text

HOUR = 3600


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def admin(h: Harness) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(grpc.insecure_channel(h.server.admin_address))


def decide(h: Harness, token: str) -> tuple[str, str]:
    r = h.authorize(token)
    return r.reason, (r.errors[0] if r.errors else "")


@pytest.fixture
def fast(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory(reload={"settle_seconds": 0.05, "poll_seconds": 30})


@pytest.mark.parametrize("key", ["token", "agent", "user", "issuer"])
def test_each_key_from_the_file(harness_factory: Callable[..., Harness], tmp_path: Path, key: str) -> None:
    policies = write_estate(tmp_path / "estate")
    # `before` an hour ago: tokens minted two hours ago are revoked, tokens minted now are not.
    cut = format_time(time.time() - HOUR)
    (policies / "killswitch.yaml").write_text("")
    h = harness_factory(policies)
    old = h.token(act_chain=("worker", "orchestrator"), now=time.time() - 2 * HOUR, ttl_seconds=3 * HOUR)
    new = h.token(act_chain=("worker", "orchestrator"))
    text = {
        "token": f"revoked:\n  tokens: ['{jti_of(old)}']\n",
        "agent": f"revoked:\n  issued_before:\n    agents: {{orchestrator: {cut}}}\n",
        "user": f"revoked:\n  issued_before:\n    users: {{alice: '{cut}'}}\n",
        "issuer": f"revoked:\n  issued_before:\n    issuers: {{'{ISSUER}': {cut}}}\n",
    }[key]
    assert decide(h, old)[0] == "allowed"  # verified and cached before the file changes
    (policies / "killswitch.yaml").write_text(text)
    version = h.server.store.current().version
    h.server.store.load()
    assert h.server.store.current().version != version
    reason, detail = decide(h, old)
    assert reason == "token_revoked", detail
    expected = {
        "token": "(jti) is revoked",
        "agent": f"token issued before {cut}, when agent 'orchestrator's tokens were revoked",
        "user": "when user 'alice's tokens were revoked",
        "issuer": f"when issuer '{ISSUER}'s tokens were revoked",
    }[key]
    assert expected in detail and old not in detail
    assert decide(h, new)[0] == "allowed"
    # A time holds for every token it names, the agent as the current actor too; a jti only for its token.
    alone = h.token(act_chain=("orchestrator",), now=time.time() - 2 * HOUR, ttl_seconds=3 * HOUR)
    assert decide(h, alone)[0] == ("allowed" if key == "token" else "token_revoked")


KINDS = {
    "token": apb.REVOKE_KIND_TOKEN,
    "agent": apb.REVOKE_KIND_AGENT,
    "user": apb.REVOKE_KIND_USER,
    "issuer": apb.REVOKE_KIND_ISSUER,
}


@pytest.mark.parametrize("key", ["token", "agent", "user", "issuer"])
def test_each_key_from_the_admin_api_denies_a_cached_token(fast: Harness, key: str) -> None:
    cached = fast.token(act_chain=("worker",), now=time.time() - 60)
    other = fast.token(sub="bob", act_chain=("orchestrator",), now=time.time() - 60)
    assert decide(fast, cached)[0] == "allowed" and decide(fast, cached)[0] == "allowed"  # the second: a cache hit
    ident = {"token": jti_of(cached), "agent": "worker", "user": "alice", "issuer": ISSUER}[key]
    req = apb.RevokeRequest(kind=KINDS[key], id=ident, reason="incident 42", actor="sre")
    resp = admin(fast).Revoke(req, timeout=10)
    assert resp.changed
    assert [(r.id, r.source, r.actor, r.scope) for r in resp.status.revocations] == [(ident, "admin", "sre", "local")]
    reason, detail = decide(fast, cached)
    assert reason == "token_revoked" and cached not in detail, detail
    assert f'pep_revocations{{kind="{key}",scope="local",source="admin"}} 1.0' in metrics_text(fast)
    # Only what was named: another user's token through another agent is untouched (but not by issuer).
    assert decide(fast, other)[0] == ("token_revoked" if key == "issuer" else "allowed")
    # A token minted after the revocation (default --before: now) works, except a revoked jti's.
    assert decide(fast, fast.token(act_chain=("worker",), now=time.time() + 2))[0] == "allowed"  # iat within leeway
    # The decision log has the admin event, with the time.
    events = [e for e in fast.log_lines(3) if e.get("event") == "admin"]
    assert events[-1]["action"] == "revoke" and events[-1]["kind"] == key and events[-1]["id"] == ident
    assert ("before" in events[-1]) == (key != "token")
    same = apb.RevokeRequest(kind=KINDS[key], id=ident, before=resp.status.revocations[0].before, reason="again")
    assert not admin(fast).Revoke(same, timeout=10).changed  # already in force (a later time would replace it)
    lifted = admin(fast).Unrevoke(apb.UnrevokeRequest(kind=KINDS[key], id=ident, actor="sre"), timeout=10)
    assert lifted.changed and not lifted.status.revocations
    assert decide(fast, cached)[0] == "allowed"


def test_admin_api_refuses_bad_requests(fast: Harness) -> None:
    stub = admin(fast)
    bad = [
        apb.RevokeRequest(kind=apb.REVOKE_KIND_AGENT, id="worker", reason=""),
        apb.RevokeRequest(kind=apb.REVOKE_KIND_AGENT, id="", reason="r"),
        apb.RevokeRequest(kind=apb.REVOKE_KIND_UNSPECIFIED, id="worker", reason="r"),
        apb.RevokeRequest(kind=apb.REVOKE_KIND_AGENT, id="worker", reason="r", before=time.time() + 86400),
        apb.RevokeRequest(kind=apb.REVOKE_KIND_AGENT, id="worker", reason="r", before=float("nan")),
    ]
    for req in bad:
        with pytest.raises(grpc.RpcError) as e:
            stub.Revoke(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pep_admin_revoke_before_a_past_time(fast: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    older = fast.token(act_chain=("worker",), now=time.time() - 2 * HOUR, ttl_seconds=3 * HOUR)
    newer = fast.token(act_chain=("worker",), now=time.time() - 60)
    cut = format_time(time.time() - HOUR)
    cli = ["admin", "--address", fast.server.admin_address]
    assert main([*cli, "revoke", "agent", "worker", "--before", cut, "--reason", "key leaked", "--actor", "sre"]) == 0
    out = capsys.readouterr().out
    assert f"revoked agent worker: tokens issued before {cut}" in out
    assert decide(fast, older)[0] == "token_revoked"
    assert decide(fast, newer)[0] == "allowed"  # issued after --before
    # A later time replaces the earlier one; an earlier one changes nothing.
    assert (
        main([*cli, "revoke", "agent", "worker", "--before", format_time(time.time() - 7200 - 60), "--reason", "x"])
        == 0
    )
    assert "no change: agent worker was already revoked up to that time or a later one" in capsys.readouterr().out
    assert main([*cli, "revoke", "agent", "worker", "--reason", "contain"]) == 0
    assert decide(fast, newer)[0] == "token_revoked"
    assert main([*cli, "status"]) == 0
    status = capsys.readouterr().out
    assert "revoked agent worker: tokens issued before" in status and "(admin since" in status
    assert main([*cli, "unrevoke", "agent", "worker"]) == 0
    assert "unrevoked agent worker" in capsys.readouterr().out
    assert decide(fast, older)[0] == "allowed"
    # Usage errors: one line, exit 2.
    assert main([*cli, "revoke", "agent", "worker", "--before", "2026-12-01T10:00:00", "--reason", "x"]) == 2
    assert main([*cli, "revoke", "token", "j", "--before", cut, "--reason", "x"]) == 2
    assert main([*cli, "revoke", "agent", "worker", "--before", format_time(time.time() + 86400), "--reason", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no time zone" in err[0] and "a jti is revoked whenever" in err[1] and "future" in err[2]


def test_file_revocations_are_listed_by_status(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    policies = write_estate(tmp_path / "estate")
    (policies / "killswitch.yaml").write_text(
        "revoked:\n  tokens: [abc]\n  issued_before:\n    users: {alice: 2026-12-01T10:00:00Z}\n"
    )
    h = harness_factory(policies)
    status = admin(h).Status(apb.StatusRequest(), timeout=10)
    assert [(r.kind, r.id, r.source, format_time(r.before) if r.before else "") for r in status.revocations] == [
        (apb.REVOKE_KIND_TOKEN, "abc", "file", ""),
        (apb.REVOKE_KIND_USER, "alice", "file", "2026-12-01T10:00:00Z"),
    ]


class _StatusLists(http.server.BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_status_list_through_a_running_server(pep: Harness) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusLists)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        key = devtoken.load_private_key(pep.key_path)
        # Entries 0 valid, 1 invalid, 2 suspended (two bits each, low bits first: 0b_10_01_00).
        claims = {"sub": base + "/l", "iat": int(time.time()), "status_list": {"bits": 2, "lst": ""}}
        claims["status_list"]["lst"] = forge.b64(zlib.compress(bytes([0b100100])))
        header = {"typ": "statuslist+jwt", "alg": "ES256", "kid": forge.kid_of(key)}
        _StatusLists.bodies = {"/l": devtoken.sign_jws(key, header, claims).encode()}

        def at(idx: int, path: str = "/l") -> tuple[str, str]:
            return decide(pep, pep.token(extra_claims={"status": {"status_list": {"idx": idx, "uri": base + path}}}))

        assert at(0) == ("allowed", "")
        assert at(1) == ("token_revoked", "token is INVALID in its issuer's status list")
        assert at(2) == ("token_revoked", "token is SUSPENDED in its issuer's status list")
        assert at(0, "/down") == ("token_revoked", "token status list unavailable: HTTP 503")
    finally:
        server.shutdown()
        server.server_close()
