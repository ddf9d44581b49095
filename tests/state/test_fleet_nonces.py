"""DPoP server nonces shared by a fleet on a real redis-server (pep/state/nonce_secret.py): a nonce
replica 1 hands out is accepted by replica 2; with Redis down at start a replica uses its own
secret (nonces valid there only) and takes the fleet's once Redis answers. Deadlines are generous
(PEP_TEST_FLEET_SECONDS)."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pep.dev import tokens as devtoken
from pep.state.nonce_secret import secret_key
from tests.harness.redis import RedisServer
from tests.harness.server import AUDIENCE, ISSUER, Harness

FLEET_SECONDS = float(os.environ.get("PEP_TEST_FLEET_SECONDS", "10"))
URI = "https://pep.test/pep.v1.Authorizer/Authorize"


def _replica(make: Callable[..., Harness], tmp_path: Path, state: dict[str, Any]) -> Harness:
    _, jwks = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    issuer = {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"], "dpop_nonce": True}
    return make(issuers=[issuer], state=state)


def _ask(h: Harness, nonce: str | None = None) -> Any:
    key, jwk = devtoken.new_dpop_key()
    token = h.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    proof = devtoken.mint_dpop_proof(key, jwk, htm="POST", htu=URI, access_token=token, nonce=nonce)
    return h.authorize("DPoP " + token, dpop_proof=proof, http_method="POST", http_uri=URI)


def test_a_nonce_from_one_replica_is_accepted_by_another(
    tmp_path: Path, redis_server: RedisServer, harness_factory: Callable[..., Harness]
) -> None:
    state = {"redis_url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:8]}:"}
    one, two = _replica(harness_factory, tmp_path, state), _replica(harness_factory, tmp_path, state)
    assert one.server.verifier.nonces.shared and two.server.verifier.nonces.shared
    nonce = _ask(one).dpop_nonce
    assert nonce
    answer = _ask(two, nonce)
    assert (answer.reason, answer.dpop_nonce) == ("allowed", nonce)
    assert _ask(one, nonce).reason == "allowed"
    kept = redis_server.client().get(secret_key(state["key_prefix"]))
    assert kept is not None and len(kept) == 64
    assert kept not in one.log_path.read_text()


def test_redis_down_at_start_is_per_replica_until_it_answers(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    harness_factory: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    late = RedisServer(binary, tmp_path_factory.mktemp("redis-late"))  # not started yet
    state = {"redis_url": late.url, "key_prefix": "late:", "timeout_ms": 200}
    with caplog.at_level(logging.WARNING, logger="pep.tokens.nonce"):
        alone = _replica(harness_factory, tmp_path, state)
    assert "valid on this replica only" in caplog.text
    local = _ask(alone).dpop_nonce
    assert _ask(alone, local).reason == "allowed"  # its own nonces hold meanwhile
    late.start()
    try:
        fleet_secret = bytes(range(32))
        late.client().set(secret_key("late:"), fleet_secret.hex())  # another replica got there first
        deadline = time.monotonic() + max(FLEET_SECONDS, 20)  # retries after 1, 2, 5, 10 s
        while not alone.server.verifier.nonces.shared and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alone.server.verifier.nonces.shared
        after = _ask(alone, local)  # issued under the local secret: refused once, with the fleet's nonce
        assert after.reason == "dpop_nonce_required" and after.dpop_nonce != local
        assert _ask(alone, after.dpop_nonce).reason == "allowed"
        other = _replica(harness_factory, tmp_path, state)
        assert _ask(other, after.dpop_nonce).reason == "allowed"
    finally:
        late.stop()
