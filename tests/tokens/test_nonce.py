"""DPoP server nonces (RFC 9449 8, pep/tokens/nonce.py): the HMAC windows, rotation and grace on an
injected clock, the check's place in the proof checks, the fleet secret's hand-over, and the config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.config import IssuerConfig, TokenConfig, parse_config
from pep.dev import tokens as devtoken
from pep.errors import ConfigError, TokenError
from pep.reasons import Reason
from pep.tokens.nonce import NEEDS_NONCE, STALE_NONCE, UNKNOWN_NONCE, NonceError, Nonces
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness import forge
from tests.harness.tokens import Env

SECRET = bytes(range(32))
URI = "https://pep.test/pep.v1.Authorizer/Authorize"


def _refusal(nonces: Nonces, nonce: object, now: float) -> NonceError:
    with pytest.raises(NonceError) as info:
        nonces.check(nonce, now)
    assert info.value.reason == Reason.DPOP_NONCE_REQUIRED
    return info.value


def test_a_nonce_is_the_window_and_its_hmac() -> None:
    nonces = Nonces(300, 60, SECRET)
    nonce = nonces.current(1_800_000_123.5)
    window = 1_800_000_123 // 300
    raw = base64.urlsafe_b64decode(nonce + "==")
    assert len(nonce) == 32 and "=" not in nonce
    assert raw[:8] == window.to_bytes(8, "big")
    assert raw[8:] == hmac.new(SECRET, raw[:8], hashlib.sha256).digest()[:16]
    assert nonces.current(window * 300) == nonce == nonces.current(window * 300 + 299.9)
    assert nonces.current(window * 300 + 300) != nonce


def test_rotation_and_grace_on_an_injected_clock() -> None:
    nonces = Nonces(300, 60, SECRET)
    start = 1_800_000_000 - 1_800_000_000 % 300  # a window boundary
    old = nonces.current(start + 10)
    nonces.check(old, start + 10)
    nonces.check(old, start + 299)
    new = nonces.current(start + 300)
    assert new != old
    nonces.check(new, start + 300)
    nonces.check(old, start + 300)  # the previous window's, within the grace
    nonces.check(old, start + 359.9)
    stale = _refusal(nonces, old, start + 360)
    assert (stale.detail, stale.dpop_nonce) == (STALE_NONCE, new)
    assert _refusal(nonces, old, start + 900).detail == STALE_NONCE  # two windows back
    # A nonce of a window not reached yet was not issued by this clock.
    assert _refusal(nonces, nonces.current(start + 600), start + 300).detail == UNKNOWN_NONCE


def test_no_grace_means_only_the_current_window() -> None:
    nonces = Nonces(10, 0, SECRET)
    old = nonces.current(100)
    assert _refusal(nonces, old, 110).detail == STALE_NONCE


@pytest.mark.parametrize(
    ("nonce", "detail"),
    [
        (None, NEEDS_NONCE),
        ("", NEEDS_NONCE),
        ("x" * 32, UNKNOWN_NONCE),
        ("é" * 32, UNKNOWN_NONCE),
        ("short", UNKNOWN_NONCE),
        (12345, UNKNOWN_NONCE),
        (["a"], UNKNOWN_NONCE),
        ("A" * 10_000, UNKNOWN_NONCE),
    ],
    ids=["absent", "empty", "garbage", "non-ascii", "short", "number", "list", "huge"],
)
def test_bad_nonces_are_refused_with_the_current_one(nonce: object, detail: str) -> None:
    nonces = Nonces(300, 60, SECRET)
    refused = _refusal(nonces, nonce, 1_800_000_000)
    assert (refused.detail, refused.dpop_nonce) == (detail, nonces.current(1_800_000_000))


def test_a_nonce_of_another_secret_is_not_this_servers() -> None:
    mine, theirs = Nonces(300, 60, SECRET), Nonces(300, 60, bytes(32))
    assert _refusal(mine, theirs.current(1_800_000_000), 1_800_000_000).detail == UNKNOWN_NONCE


def test_bad_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        Nonces(0, 0)
    with pytest.raises(ValueError):
        Nonces(10, 11)


# --- the fleet's secret ------------------------------------------------------------------------


class Store:
    def __init__(self, kept: bytes | None = None, fail: int = 0) -> None:
        self.kept, self.fail, self.calls = kept, fail, 0
        self.answered = threading.Event()

    def shared_secret(self, candidate: bytes) -> bytes:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("down")
        if self.kept is None:
            self.kept = candidate
        self.answered.set()
        return self.kept


def test_a_shared_secret_is_taken_at_once() -> None:
    one, two = Nonces(300, 60), Nonces(300, 60)
    store = Store()
    assert one.share(store) and two.share(store)
    assert one.shared and two.shared
    two.check(one.current(1_800_000_000), 1_800_000_000)


def test_an_unreachable_store_keeps_the_local_secret_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    store = Store(kept=SECRET, fail=2)
    nonces = Nonces(300, 60, bytes(32))
    local = nonces.current(1_800_000_000)
    with caplog.at_level(logging.WARNING, logger="pep.tokens.nonce"):
        assert not nonces.share(store, retry=(0.01,))
        assert store.answered.wait(10)
        nonces.close()
    assert nonces.shared
    assert nonces.current(1_800_000_000) == Nonces(300, 60, SECRET).current(1_800_000_000) != local
    text = caplog.text
    assert "valid on this replica only" in text and "ConnectionError" in text
    assert SECRET.hex() not in text and local not in text


def test_a_short_shared_secret_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    nonces = Nonces(300, 60, SECRET)
    with caplog.at_level(logging.WARNING, logger="pep.tokens.nonce"):
        assert not nonces.share(Store(kept=b"short"), retry=(30.0,))
        nonces.close()  # stops the retry thread before it asks again
    assert not nonces.shared and nonces.current(0) == Nonces(300, 60, SECRET).current(0)


# --- in the proof checks -----------------------------------------------------------------------


def _verifier(env: Env, **tokens: Any) -> TokenVerifier:
    issuer = IssuerConfig(forge.ISSUER, (forge.AUDIENCE,), ("ES256",), jwks_file=env.jwks_path, dpop_nonce=True)
    plain = IssuerConfig("https://plain.test", (forge.AUDIENCE,), ("ES256",), jwks_file=env.jwks_path)
    v = TokenVerifier([issuer, plain], replace(TokenConfig(), **tokens), clock=env.clock, cache_size=100)
    env.verifiers.append(v)
    return v


def _creds(
    env: Env, dpop_key: tuple[ec.EllipticCurvePrivateKey, dict[str, str]], token: str, **proof: Any
) -> Credentials:
    key, jwk = dpop_key
    made = devtoken.mint_dpop_proof(key, jwk, htm="POST", htu=URI, access_token=token, now=env.clock.now, **proof)
    return Credentials("DPoP " + token, made, "POST", URI)


def test_a_proof_without_the_nonce_gets_one_then_passes(
    env: Env, dpop_key: tuple[ec.EllipticCurvePrivateKey, dict[str, str]]
) -> None:
    v = _verifier(env)
    claims = env.claims(cnf={"jkt": devtoken.jwk_thumbprint(dpop_key[1])}, exp=int(env.clock.now) + 3600)
    token = env.token(claims)
    with pytest.raises(NonceError) as info:
        v.verify(_creds(env, dpop_key, token))
    assert (info.value.reason, info.value.detail) == (Reason.DPOP_NONCE_REQUIRED, NEEDS_NONCE)
    nonce = info.value.dpop_nonce
    verified = v.verify(_creds(env, dpop_key, token, nonce=nonce))
    assert (verified.binding, verified.dpop_nonce) == ("dpop", nonce)
    env.clock.now += 300  # the next window: still accepted in the grace, the answer names the new one
    later = v.verify(_creds(env, dpop_key, token, nonce=nonce))
    assert later.dpop_nonce not in ("", nonce)
    env.clock.now += 60
    with pytest.raises(NonceError) as stale:
        v.verify(_creds(env, dpop_key, token, nonce=nonce))
    assert (stale.value.detail, stale.value.dpop_nonce) == (STALE_NONCE, later.dpop_nonce)


def test_the_nonce_is_checked_after_the_proof_and_before_the_replay_cache(
    env: Env, dpop_key: tuple[ec.EllipticCurvePrivateKey, dict[str, str]]
) -> None:
    v = _verifier(env)
    token = env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(dpop_key[1])}))
    key, jwk = dpop_key
    wrong_uri = devtoken.mint_dpop_proof(key, jwk, htm="POST", htu=URI + "x", access_token=token, now=env.clock.now)
    with pytest.raises(TokenError) as info:
        v.verify(Credentials("DPoP " + token, wrong_uri, "POST", URI))
    assert info.value.reason == Reason.DPOP_PROOF_INVALID  # the proof's own checks first
    no_nonce = _creds(env, dpop_key, token, jti="same-jti")
    with pytest.raises(NonceError) as refused:
        v.verify(no_nonce)
    # A proof refused for its nonce never entered the replay cache: its jti may come back with the nonce.
    v.verify(_creds(env, dpop_key, token, jti="same-jti", nonce=refused.value.dpop_nonce))
    with pytest.raises(TokenError) as replay:
        v.verify(_creds(env, dpop_key, token, jti="same-jti", nonce=refused.value.dpop_nonce))
    assert replay.value.reason == Reason.DPOP_REPLAY


def test_other_issuers_and_bearer_tokens_need_no_nonce(
    env: Env, dpop_key: tuple[ec.EllipticCurvePrivateKey, dict[str, str]]
) -> None:
    v = _verifier(env)
    plain = env.token(env.claims(iss="https://plain.test", cnf={"jkt": devtoken.jwk_thumbprint(dpop_key[1])}))
    assert v.verify(_creds(env, dpop_key, plain)).dpop_nonce == ""
    bearer = v.verify(Credentials("Bearer " + env.token()))
    assert (bearer.binding, bearer.dpop_nonce) == ("bearer", "")


# --- the config --------------------------------------------------------------------------------


def _config(issuer: dict[str, Any] | None = None, **tokens: Any) -> Any:
    item = {"issuer": "https://idp.test", "audiences": ["pep"], "jwks_uri": "https://idp.test/jwks", **(issuer or {})}
    return parse_config({"issuers": [item], "tokens": tokens})


def test_config_defaults_and_values() -> None:
    cfg = _config()
    assert (cfg.issuers[0].dpop_nonce, cfg.tokens.dpop_nonce_seconds, cfg.tokens.dpop_nonce_grace_seconds) == (
        False,
        300,
        60,
    )
    cfg = _config({"dpop_nonce": True}, dpop_nonce_seconds=30, dpop_nonce_grace_seconds=30)
    assert (cfg.issuers[0].dpop_nonce, cfg.tokens.dpop_nonce_seconds, cfg.tokens.dpop_nonce_grace_seconds) == (
        True,
        30,
        30,
    )


@pytest.mark.parametrize(
    ("issuer", "tokens", "key"),
    [
        ({"dpop_nonce": "yes"}, {}, "issuers[0].dpop_nonce"),
        ({}, {"dpop_nonce_seconds": 0}, "tokens.dpop_nonce_seconds"),
        ({}, {"dpop_nonce_seconds": 86401}, "tokens.dpop_nonce_seconds"),
        ({}, {"dpop_nonce_seconds": "300"}, "tokens.dpop_nonce_seconds"),
        ({}, {"dpop_nonce_grace_seconds": -1}, "tokens.dpop_nonce_grace_seconds"),
        ({}, {"dpop_nonce_seconds": 30, "dpop_nonce_grace_seconds": 31}, "tokens.dpop_nonce_grace_seconds"),
        ({}, {"dpop_nonce_secs": 30}, "tokens.dpop_nonce_secs"),
    ],
)
def test_bad_config_names_its_key(issuer: dict[str, Any], tokens: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(issuer, **tokens)
    assert info.value.key == key
