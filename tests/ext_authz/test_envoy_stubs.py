"""Wire compatibility: Envoy's own generated stubs (xds-protos) ask pep's ext_authz.

pep serves a minimal vendored subset of the Envoy API; this client uses the complete
upstream messages, in its own process, so a wrong field number or package name shows.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from pep.dev import tokens as devtoken
from tests.harness.certs import make_cert
from tests.harness.envoy import HOST, Ext

SCRIPT = Path(__file__).with_name("envoy_stubs_client.py")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("envoy.service.auth.v3.external_auth_pb2") is None,
    reason="xds-protos (Envoy's generated stubs) is not installed: pip install -e '.[dev]'",
)


def ask(ext: Ext, requests: list[dict]) -> list[dict]:
    job = json.dumps({"target": ext.h.server.addresses[0], "requests": requests})
    # -I: isolated mode, so the repository (and pep's vendored protos) stay off sys.path.
    proc = subprocess.run(
        [sys.executable, "-I", str(SCRIPT)], input=job, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_envoy_stubs_allow_deny_token_failure_dpop_and_mtls(ext: Ext) -> None:
    mapped = {"x-pep-action": "read", "x-pep-resource": 'Doc::"plan"'}
    token = ext.h.token()
    key, jwk = devtoken.new_dpop_key()
    bound = ext.h.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    proof = devtoken.mint_dpop_proof(key, jwk, htm="GET", htu=f"https://{HOST}/docs/plan", access_token=bound)
    cert = make_cert("worker")
    cert_bound = ext.h.token(x5t_s256=cert.x5t)
    results = ask(
        ext,
        [
            {
                "method": "GET",
                "path": "/docs/plan",
                "host": HOST,
                "headers": {**mapped, "authorization": f"Bearer {token}"},
            },
            {
                "method": "GET",
                "path": "/docs/keys",
                "host": HOST,
                "headers": {"authorization": f"Bearer {token}"},
                "extensions": {"pep_action": "read", "pep_resource": 'Doc::"keys"'},
            },
            {
                "method": "GET",
                "path": "/docs/plan",
                "host": HOST,
                "headers": {**mapped, "authorization": "Bearer a.b.c"},
            },
            {
                "method": "GET",
                "path": "/docs/plan?q=1",
                "host": HOST,
                "headers": {**mapped, "authorization": f"DPoP {bound}", "dpop": proof},
            },
            {
                "method": "GET",
                "path": "/docs/plan",
                "host": HOST,
                "headers": {**mapped, "authorization": f"Bearer {cert_bound}"},
                "certificate": urllib.parse.quote(cert.pem, safe=""),
            },
        ],
    )
    allow, forbid, bad_token, dpop, mtls = results
    assert (allow["code"], allow["kind"]) == (0, "ok_response")
    assert ["x-pep-reason", "allowed"] in allow["headers"] and ["x-pep-agent", "worker"] in allow["headers"]
    assert allow["metadata"]["decision"] == "allow"
    assert (forbid["code"], forbid["http_status"], forbid["body"]["reason"]) == (7, 403, "policy_forbid")
    assert (bad_token["code"], bad_token["http_status"]) == (7, 401)
    assert ["www-authenticate", 'Bearer error="invalid_token", error_description="The access token is malformed"'] in (
        bad_token["headers"]
    )
    assert (dpop["code"], dpop["kind"]) == (0, "ok_response"), dpop
    assert (mtls["code"], mtls["kind"]) == (0, "ok_response"), mtls
