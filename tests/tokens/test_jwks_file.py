"""`jwks_file` reloads when the file changes; a bad file keeps the last good keys (real signatures)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.jwks_file import FileKeySource
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness import forge
from tests.harness.forge import AUDIENCE, ISSUER
from tests.harness.tokens import Env

# Generous: the poller runs every 0.05 s here, on a loaded box it may take much longer.
DEADLINE_SECONDS = float(os.environ.get("PEP_TEST_DEADLINE", "20"))


def _jwks(*keys: Any) -> str:
    return json.dumps({"keys": [{**devtoken.public_jwk(k), "kid": forge.kid_of(k), "alg": "ES256"} for k in keys]})


def _replace(path: Path, text: str) -> None:
    """Write and rename over, as rotation tools (and Kubernetes volumes) do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tok(env: Env, key: Any, jti: str = "j1") -> str:
    return forge.token(key, forge.good_claims(env.clock.now, jti=jti))


def _verifier(
    env: Env, path: Path, results: list[str], *, background: bool = False, poll: float = 2.0
) -> TokenVerifier:
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_file=str(path))
    cfg = TokenConfig(jwks_file_poll_seconds=poll)
    v = TokenVerifier(
        [issuer], cfg, clock=env.clock, on_jwks_refresh=results.append, jwks_background_refresh=background
    )
    env.verifiers.append(v)
    return v


def _reason(v: TokenVerifier, token: str) -> Reason:
    with pytest.raises(TokenError) as e:
        v.verify(Credentials(token))
    return e.value.reason


def test_rotation_is_picked_up_on_an_unknown_kid_and_cached_tokens_verify_again(
    env: Env, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = env.tmp / "jwks.json"
    path.write_text(_jwks(env.key))
    results: list[str] = []
    v = _verifier(env, path, results)
    old = _tok(env, env.key)
    assert v.verify(Credentials(old))
    assert v.verify(Credentials(old))  # now cached
    _replace(path, _jwks(other_ec_key))  # the old key is retired
    assert v.verify(Credentials(_tok(env, other_ec_key)))  # unknown kid: the file is checked at once
    assert results == ["success"]
    # The cached verdict was for the old key set: the token is verified again, and fails.
    assert _reason(v, old) == Reason.TOKEN_SIGNATURE_INVALID


def test_a_bad_file_keeps_the_last_good_keys_and_counts_a_failure(
    env: Env, other_ec_key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = env.tmp / "jwks.json"
    path.write_text(_jwks(env.key))
    results: list[str] = []
    source = FileKeySource(str(path), ("ES256",), "issuers[0].jwks_file", on_refresh=results.append, background=False)
    first = source.current()
    caplog.set_level(logging.WARNING, logger="pep.tokens.jwks")
    for bad, problem in (
        ("{not json", "JWK Set"),
        (json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}), "keys[0]"),
        (json.dumps({"keys": []}), "no usable signing keys"),
        (json.dumps({"keys": [{**devtoken.public_jwk(env.key), "d": "AAAA"}]}), "private key members"),
    ):
        _replace(path, bad)
        assert source.poll() is False
        assert source.current() is first
        assert results[-1] == "failure"
        assert str(path) in caplog.text and problem in caplog.text, (problem, caplog.text)
        caplog.clear()
    assert source.poll() is False and len(results) == 4  # unchanged: not read again, not counted again
    path.unlink()
    assert source.poll() is False and results[-1] == "failure" and "cannot read" in caplog.text
    assert source.poll() is False and len(results) == 5  # a missing file is reported once
    _replace(path, _jwks(env.key, other_ec_key))
    assert source.poll() is True and results[-1] == "success"
    assert {k.kid for k in source.current().keys} == {forge.kid_of(env.key), forge.kid_of(other_ec_key)}


def test_an_in_place_rewrite_of_the_same_size_is_seen(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = env.tmp / "jwks.json"
    path.write_text(_jwks(env.key))
    source = FileKeySource(str(path), ("ES256",), "k", background=False)
    before = os.stat(path)
    text = _jwks(other_ec_key)
    with open(path, "w") as f:  # same inode; same size for two P-256 keys
        f.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and, as on a coarse clock, the same mtime
    assert os.stat(path).st_size == before.st_size
    assert source.poll() is True
    assert [k.kid for k in source.current().keys] == [forge.kid_of(other_ec_key)]


def test_the_background_poller_reloads_without_any_request(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = env.tmp / "jwks.json"
    path.write_text(_jwks(env.key))
    results: list[str] = []
    v = _verifier(env, path, results, background=True, poll=0.05)
    old = _tok(env, env.key)
    assert v.verify(Credentials(old))
    _replace(path, _jwks(other_ec_key))
    deadline = time.monotonic() + DEADLINE_SECONDS
    while "success" not in results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert results == ["success"]
    assert _reason(v, old) == Reason.TOKEN_SIGNATURE_INVALID
    started = time.monotonic()
    v.close()
    assert time.monotonic() - started < 5
