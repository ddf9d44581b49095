"""ext_authz Check end to end: a real pep on an ephemeral port, asked through gRPC with the
Envoy API messages, as Envoy's ext_authz filter asks it."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pep._proto.envoy.service.auth.v3 import external_auth_pb2 as ea
from pep.api.ext_authz import SERVICE_NAME
from pep.dev import tokens as devtoken
from tests.harness.certs import make_cert
from tests.harness.envoy import HOST, Ext, check_request, header_values, mapped_headers

OK = grpc.StatusCode.OK.value[0]
DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


def denied(resp: ea.CheckResponse) -> tuple[int, int, dict[str, list[str]], dict]:
    assert resp.HasField("denied_response"), resp
    d = resp.denied_response
    return resp.status.code, d.status.code, header_values(d.headers), json.loads(d.body)


# --- decisions ---------------------------------------------------------------------------


def test_allow_adds_decision_headers_upstream_and_downstream(ext: Ext) -> None:
    token = ext.h.token()
    resp = ext.check(check_request(headers=mapped_headers({"authorization": f"Bearer {token}"})))
    assert resp.status.code == OK and resp.HasField("ok_response")
    up = header_values(resp.ok_response.headers)
    down = header_values(resp.ok_response.response_headers_to_add)
    assert up["x-pep-reason"] == ["allowed"] and down["x-pep-reason"] == ["allowed"]
    assert up["x-pep-decision-id"] == down["x-pep-decision-id"]
    assert (up["x-pep-agent"], up["x-pep-on-behalf-of"]) == (["worker"], ["alice"])
    meta = dict(resp.dynamic_metadata)
    assert (meta["decision"], meta["reason"], meta["agent"]) == ("allow", "allowed", "worker")
    # The decision is logged like any other, with Envoy's request id.
    line = next(x for x in ext.h.log_lines() if x["decision_id"] == up["x-pep-decision-id"][0])
    assert (line["decision"], line["action"], line["request_id"]) == ("allow", "read", "req-1")
    assert line["resource"]["type"] == "Doc" and line["resource"]["id"] == "plan"


def test_autonomous_agent_has_its_on_behalf_of_header_removed(ext: Ext) -> None:
    token = ext.h.token(sub="worker", act_chain=())
    resp = ext.check(
        check_request(headers=mapped_headers({"authorization": f"Bearer {token}", "x-pep-on-behalf-of": "mallory"}))
    )
    assert resp.status.code == OK
    assert "x-pep-on-behalf-of" in resp.ok_response.headers_to_remove
    assert "x-pep-on-behalf-of" not in header_values(resp.ok_response.headers)


def test_policy_deny_is_403_without_challenge(ext: Ext) -> None:
    token = ext.h.token()
    resp = ext.check(
        check_request(headers=mapped_headers({"authorization": f"Bearer {token}"}, resource='Doc::"keys"'))
    )
    code, http, headers, body = denied(resp)
    assert (code, http) == (DENIED, 403)
    assert headers["x-pep-reason"] == ["policy_forbid"] and "www-authenticate" not in headers
    assert body["reason"] == "policy_forbid" and body["decision_id"] == headers["x-pep-decision-id"][0]
    assert headers["content-type"] == ["application/json"]


def test_no_permit_is_403(ext: Ext) -> None:
    token = ext.h.token()
    resp = ext.check(check_request(headers=mapped_headers({"authorization": f"Bearer {token}"}, action="write")))
    assert denied(resp)[:2] == (DENIED, 403)
    assert denied(resp)[3]["reason"] == "policy_no_permit"


# --- token failures: 401 with RFC 6750 / RFC 9449 challenges -----------------------------


def test_missing_token_offers_both_schemes_without_error(ext: Ext) -> None:
    code, http, headers, body = denied(ext.check(check_request(headers=mapped_headers())))
    assert (code, http, body["reason"]) == (DENIED, 401, "token_missing")
    assert headers["www-authenticate"] == ["Bearer", 'DPoP algs="ES256 ES384 ES512 RS256 PS256 EdDSA Ed25519"']


def test_expired_bearer_token_gets_bearer_invalid_token(ext: Ext) -> None:
    token = ext.h.token(now=time.time() - 3600, ttl_seconds=300)
    _code, http, headers, body = denied(
        ext.check(check_request(headers=mapped_headers({"authorization": f"Bearer {token}"})))
    )
    assert (http, body["reason"]) == (401, "token_expired")
    assert headers["www-authenticate"] == ['Bearer error="invalid_token", error_description="The access token expired"']


def test_realm_is_configurable(ext_factory: Callable[..., Ext]) -> None:
    ext = ext_factory(ext_authz={"realm": "pep-api"})
    _, _, headers, _ = denied(ext.check(check_request(headers=mapped_headers({"authorization": "Bearer x.y.z"}))))
    assert headers["www-authenticate"][0].startswith('Bearer realm="pep-api", error="invalid_token"')


# --- DPoP through the headers, htu from the HTTP attributes ----------------------------


def dpop_request(ext: Ext, *, path: str = "/docs/plan?page=2", htu: str | None = None, scheme: str = "DPoP"):
    key, jwk = devtoken.new_dpop_key()
    token = ext.h.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    proof = devtoken.mint_dpop_proof(key, jwk, htm="GET", htu=htu or f"https://{HOST}/docs/plan", access_token=token)
    return check_request(path=path, headers=mapped_headers({"authorization": f"{scheme} {token}", "dpop": proof}))


def test_dpop_bound_token_with_proof_is_allowed_and_replay_is_refused(ext: Ext) -> None:
    req = dpop_request(ext)  # the query string is not part of htu
    resp = ext.check(req)
    assert resp.status.code == OK, resp
    line = ext.h.log_lines()[-1]
    assert line["binding"] == "dpop"
    _code, http, headers, body = denied(ext.check(req))
    assert (http, body["reason"]) == (401, "dpop_replay")
    assert headers["www-authenticate"] == [
        'DPoP error="invalid_dpop_proof", error_description="The DPoP proof was already used", '
        'algs="ES256 ES384 ES512 RS256 PS256 EdDSA Ed25519"'
    ]


def test_dpop_proof_for_another_uri_is_refused(ext: Ext) -> None:
    _, http, headers, body = denied(ext.check(dpop_request(ext, htu=f"https://{HOST}/docs/other")))
    assert (http, body["reason"]) == (401, "dpop_proof_invalid")
    assert headers["www-authenticate"][0].startswith('DPoP error="invalid_dpop_proof"')


def test_dpop_bound_token_as_bearer_gets_a_dpop_challenge(ext: Ext) -> None:
    _, http, headers, body = denied(ext.check(dpop_request(ext, scheme="Bearer")))
    assert (http, body["reason"]) == (401, "pop_binding_mismatch")
    assert headers["www-authenticate"][0].startswith(
        'DPoP error="invalid_token", error_description="Invalid DPoP key binding", algs="'
    )


def test_dpop_token_without_proof(ext: Ext) -> None:
    req = dpop_request(ext)
    del req.attributes.request.http.headers["dpop"]
    _, http, headers, body = denied(ext.check(req))
    assert (http, body["reason"]) == (401, "dpop_proof_missing")
    assert 'error="invalid_dpop_proof"' in headers["www-authenticate"][0]


def test_dpop_header_map_encoding_is_read_too(ext: Ext) -> None:
    """Envoy's `encode_raw_headers: true` sends headers as a list of raw values."""
    req = dpop_request(ext)
    http = req.attributes.request.http
    for key in list(http.headers):
        http.header_map.headers.add(key=key, raw_value=http.headers[key].encode())
    http.ClearField("headers")
    assert ext.check(req).status.code == OK


# --- mTLS: Envoy's peer certificate or x-forwarded-client-cert ----------------------------


@pytest.fixture(scope="module")
def client_cert():
    return make_cert("worker")


def test_certificate_bound_token_with_source_certificate(ext: Ext, client_cert) -> None:
    token = ext.h.token(x5t_s256=client_cert.x5t)
    pem = urllib.parse.quote(client_cert.pem, safe="")  # Envoy URL-encodes the PEM
    resp = ext.check(check_request(headers=mapped_headers({"authorization": f"Bearer {token}"}), certificate=pem))
    assert resp.status.code == OK, resp
    assert ext.h.log_lines()[-1]["binding"] == "mtls"


def test_certificate_bound_token_with_xfcc_hash(ext: Ext, client_cert) -> None:
    token = ext.h.token(x5t_s256=client_cert.x5t)
    xfcc = f'By=spiffe://test/proxy;Hash=00ff{"0" * 60},By=spiffe://test/envoy;Hash={client_cert.hex};Subject="CN=x"'
    req = check_request(headers=mapped_headers({"authorization": f"Bearer {token}", "x-forwarded-client-cert": xfcc}))
    assert ext.check(req).status.code == OK


def test_certificate_mismatch_is_401_bearer(ext: Ext, client_cert) -> None:
    token = ext.h.token(x5t_s256=client_cert.x5t)
    other = make_cert("mallory")
    req = check_request(
        headers=mapped_headers({"authorization": f"Bearer {token}"}), certificate=urllib.parse.quote(other.pem)
    )
    _, http, headers, body = denied(ext.check(req))
    assert (http, body["reason"]) == (401, "pop_binding_mismatch")
    assert headers["www-authenticate"] == [
        'Bearer error="invalid_token", error_description="The client certificate does not match the token"'
    ]


def test_xfcc_is_ignored_when_not_trusted(ext_factory: Callable[..., Ext], client_cert) -> None:
    ext = ext_factory(ext_authz={"trust_xfcc": False})
    token = ext.h.token(x5t_s256=client_cert.x5t)
    xfcc = f"Hash={client_cert.hex}"
    req = check_request(headers=mapped_headers({"authorization": f"Bearer {token}", "x-forwarded-client-cert": xfcc}))
    assert denied(ext.check(req))[3]["reason"] == "pop_binding_mismatch"


# --- mapping: context extensions, rules, headers; unmapped requests are denied ------------

RULES = {
    "rules": [
        {"methods": ["GET", "HEAD"], "path": "/docs/{id}", "action": "read", "resource": 'Doc::"{id}"'},
        {"methods": "PUT", "path": "/docs/{id}/{rest+}", "action": "write", "resource": 'Doc::"{id}"'},
    ]
}


def test_rules_map_method_and_path(ext_factory: Callable[..., Ext]) -> None:
    ext = ext_factory(ext_authz=RULES)
    auth = {"authorization": f"Bearer {ext.h.token()}"}
    assert ext.check(check_request("GET", "/docs/plan?x=1", headers=auth)).status.code == OK
    _, http, _, body = denied(ext.check(check_request("GET", "/docs/keys", headers=auth)))
    assert (http, body["reason"]) == (403, "policy_forbid")
    resp = ext.check(check_request("PUT", "/docs/plan/a/b", headers=auth))
    assert denied(resp)[3]["reason"] == "policy_no_permit"  # mapped to write, which no policy permits
    line = ext.h.log_lines(3)[-1]
    assert (line["action"], line["resource"]["id"]) == ("write", "plan")


def test_context_extensions_win_over_rules_and_headers(ext_factory: Callable[..., Ext]) -> None:
    ext = ext_factory(ext_authz=RULES)
    auth = {"authorization": f"Bearer {ext.h.token()}", "x-pep-action": "read", "x-pep-resource": 'Doc::"plan"'}
    req = check_request("GET", "/docs/plan", headers=auth, extensions={"pep_resource": 'Doc::"keys"'})
    assert denied(ext.check(req))[3]["reason"] == "policy_forbid"


def test_unmapped_request_is_denied_with_a_clear_reason(ext_factory: Callable[..., Ext]) -> None:
    ext = ext_factory(ext_authz=RULES)
    auth = {"authorization": f"Bearer {ext.h.token()}"}
    code, http, _headers, body = denied(ext.check(check_request("DELETE", "/docs/plan", headers=auth)))
    assert (code, http, body["reason"]) == (DENIED, 403, "invalid_request")
    assert body["message"].startswith("no action and resource for DELETE /docs/plan")
    line = ext.h.log_lines()[-1]
    assert (line["decision"], line["reason"]) == ("deny", "invalid_request")


def test_malformed_resource_header_is_denied(ext: Ext) -> None:
    auth = {"authorization": f"Bearer {ext.h.token()}"}
    _, http, _, body = denied(ext.check(check_request(headers=mapped_headers(auth, resource="plan"))))
    assert (http, body["reason"]) == (403, "invalid_request")
    assert "x-pep-resource" in body["message"]


def test_header_mapping_can_be_turned_off(ext_factory: Callable[..., Ext]) -> None:
    ext = ext_factory(ext_authz={"action_header": "", "resource_header": ""})
    auth = {"authorization": f"Bearer {ext.h.token()}"}
    assert denied(ext.check(check_request(headers=mapped_headers(auth))))[3]["reason"] == "invalid_request"


# --- availability ------------------------------------------------------------------------


def test_no_policy_loaded_is_503(ext_factory: Callable[..., Ext], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.cedar").write_text("permit(principal, action, resource")
    ext = ext_factory(policies=broken)
    code, http, _, body = denied(ext.check(check_request(headers=mapped_headers())))
    assert (code, http, body["reason"]) == (DENIED, 503, "policy_unavailable")


def test_served_on_the_grpc_port_with_reflection_and_health(ext: Ext) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(ext.h.channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_can_be_turned_off(ext_factory: Callable[..., Ext]) -> None:
    ext = ext_factory(ext_authz={"enabled": False})
    with pytest.raises(grpc.RpcError) as e:
        ext.check(check_request(headers=mapped_headers()))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
