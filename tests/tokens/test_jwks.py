"""JWK Sets: file loading errors, one algorithm per key, and jwks_uri fetching/refresh."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.dev.tokens import PrivateKey
from pep.errors import ConfigError, TokenError
from pep.reasons import Reason
from pep.tokens.jwk import JWKError, bind_algorithm, load_verification_key
from pep.tokens.jwks import MAX_KEYS, http_fetch, parse_jwks
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness import forge
from tests.harness.forge import AUDIENCE, ISSUER, OMIT
from tests.harness.tokens import Clock, Env, write_jwks


def _jwk(key: PrivateKey, **extra: Any) -> dict[str, Any]:
    return forge.merge({**devtoken.public_jwk(key), "kid": forge.kid_of(key), "alg": devtoken.alg_for_key(key)}, extra)


def _verifier(path: str, algorithms: tuple[str, ...] = ("ES256",), clock: Clock | None = None) -> TokenVerifier:
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), algorithms, jwks_file=path)
    return TokenVerifier([issuer], TokenConfig(), clock=clock or Clock())


# --- jwks_file problems are ConfigErrors at construction --------------------------------


def _config_error(tmp_path: Path, content: str | None, algorithms: tuple[str, ...] = ("ES256",)) -> ConfigError:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        _verifier(str(path), algorithms)
    assert info.value.key == "issuers[0].jwks_file"
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read" in _config_error(tmp_path, None).problem


@pytest.mark.parametrize("content", ["", "not json", "[]", '{"keys": {}}', '{"nokeys": []}', '{"keys":[],"keys":[]}'])
def test_invalid_document(tmp_path: Path, content: str) -> None:
    _config_error(tmp_path, content)


def test_no_usable_keys(tmp_path: Path, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    content = json.dumps({"keys": [_jwk(other_ec_key, use="enc"), {"kty": "oct", "k": "c2VjcmV0"}]})
    assert "no usable signing keys" in _config_error(tmp_path, content).problem


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"d": "AAAA"}, "private"),
        ({"x": "AAAA"}, "wrong length"),
        ({"y": forge.b64(bytes(31) + b"\x01")}, "not on the curve"),
        ({"alg": "ES384"}, "does not fit"),
        ({"crv": OMIT}, "crv"),
        ({"kid": 5}, "kid"),
        ({"alg": 256}, "alg"),
    ],
)
def test_malformed_key(
    tmp_path: Path, other_ec_key: ec.EllipticCurvePrivateKey, change: dict[str, Any], problem: str
) -> None:
    content = json.dumps({"keys": [_jwk(other_ec_key, **change)]})
    assert problem in _config_error(tmp_path, content).problem


def test_small_rsa_key_refused(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    content = json.dumps({"keys": [_jwk(small)]})
    assert "2048" in _config_error(tmp_path, content, ("RS256",)).problem


def test_ambiguous_rsa_key_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    content = json.dumps({"keys": [_jwk(rsa_key, alg=OMIT)]})
    assert "ambiguous" in _config_error(tmp_path, content, ("RS256", "PS256")).problem


def test_second_issuer_named_in_error(env: Env, tmp_path: Path) -> None:
    issuers = [
        IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_file=env.jwks_path),
        IssuerConfig("https://b.test", (AUDIENCE,), ("ES256",), jwks_file=str(tmp_path / "missing.json")),
    ]
    with pytest.raises(ConfigError) as info:
        TokenVerifier(issuers, TokenConfig())
    assert info.value.key == "issuers[1].jwks_file"


def test_issuer_without_keys(env: Env) -> None:
    with pytest.raises(ConfigError) as info:
        TokenVerifier([IssuerConfig(ISSUER, (AUDIENCE,))], TokenConfig())
    assert info.value.key == "issuers[0]"


def test_parse_jwks_limits(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError):
        parse_jwks(json.dumps({"keys": [_jwk(other_ec_key)] * (MAX_KEYS + 1)}).encode(), ["ES256"])
    with pytest.raises(ValueError):
        parse_jwks(b" " * (1024 * 1024 + 1), ["ES256"])


def test_skipped_and_unsupported_keys(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    doc = {
        "keys": [
            _jwk(other_ec_key, use="enc"),
            _jwk(other_ec_key, key_ops=["encrypt"]),
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
            _jwk(other_ec_key, alg="RSA-OAEP"),
            _jwk(other_ec_key),
        ]
    }
    keys, problems = parse_jwks(json.dumps(doc).encode(), ["ES256"])
    assert problems == []
    assert [k.alg for k in keys.keys] == ["ES256"]


# --- one algorithm per key ------------------------------------------------------------


@pytest.mark.parametrize(
    ("jwk", "allowed", "alg"),
    [
        ({"kty": "EC", "crv": "P-256"}, ["RS256"], "ES256"),
        ({"kty": "EC", "crv": "P-384"}, ["ES256"], "ES384"),
        ({"kty": "EC", "crv": "P-521"}, ["ES512"], "ES512"),
        ({"kty": "OKP", "crv": "Ed25519"}, ["EdDSA"], "EdDSA"),
        ({"kty": "OKP", "crv": "Ed25519"}, ["Ed25519"], "Ed25519"),
        ({"kty": "OKP", "crv": "Ed25519"}, ["EdDSA", "Ed25519"], "EdDSA"),
        ({"kty": "OKP", "crv": "Ed448"}, ["EdDSA"], "EdDSA"),
        ({"kty": "RSA"}, ["RS256", "ES256"], "RS256"),
        ({"kty": "RSA"}, ["PS384"], "PS384"),
        ({"kty": "RSA", "alg": "PS256"}, ["RS256", "PS256"], "PS256"),
        ({"kty": "EC", "crv": "P-256", "alg": "ES256"}, [], "ES256"),
    ],
)
def test_bind_algorithm(jwk: dict[str, Any], allowed: list[str], alg: str) -> None:
    assert bind_algorithm(jwk, allowed) == alg


@pytest.mark.parametrize(
    ("jwk", "allowed"),
    [
        ({"kty": "RSA"}, ["RS256", "PS256"]),
        ({"kty": "RSA"}, ["ES256"]),
        ({"kty": "EC", "crv": "P-256", "alg": "ES384"}, ["ES384"]),
        ({"kty": "OKP", "crv": "Ed25519", "alg": "ES256"}, ["ES256"]),
        ({"kty": "RSA", "alg": "HS256"}, ["RS256"]),
        ({"kty": "RSA", "alg": "none"}, ["RS256"]),
    ],
)
def test_bind_algorithm_refuses(jwk: dict[str, Any], allowed: list[str]) -> None:
    with pytest.raises(JWKError):
        bind_algorithm(jwk, allowed)


def test_not_an_object() -> None:
    with pytest.raises(JWKError):
        load_verification_key(["kty"], ["ES256"])


def _signed(key: PrivateKey, alg: str, **header: Any) -> str:
    return devtoken.sign_jws(key, forge.good_header(key, alg=alg, **header), forge.good_claims())


@pytest.mark.parametrize(
    ("make_key", "jwk_alg", "token_alg", "allowed"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384", "ES384", ("ES384",)),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512", "ES512", ("ES512",)),
        (lambda: ec.generate_private_key(ec.SECP384R1()), OMIT, "ES384", ("ES384",)),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA", "EdDSA", ("EdDSA",)),
        (ed25519.Ed25519PrivateKey.generate, OMIT, "Ed25519", ("Ed25519",)),
        (ed25519.Ed25519PrivateKey.generate, OMIT, "Ed25519", ("EdDSA", "Ed25519")),
        (ed25519.Ed25519PrivateKey.generate, OMIT, "EdDSA", ("EdDSA", "Ed25519")),
    ],
)
def test_algorithms_verify(
    tmp_path: Path, make_key: Any, jwk_alg: Any, token_alg: str, allowed: tuple[str, ...]
) -> None:
    key = make_key()
    path = write_jwks(tmp_path, "k.json", [_jwk(key, alg=jwk_alg)])
    v = _verifier(path, allowed)
    assert v.verify(Credentials(_signed(key, token_alg))).issuer == ISSUER


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_algorithms_verify(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    path = write_jwks(tmp_path, "k.json", [_jwk(rsa_key, alg=alg)])
    v = _verifier(path, (alg,))
    assert v.verify(Credentials(_signed(rsa_key, alg))).issuer == ISSUER
    other = "PS256" if alg.startswith("RS") else "RS256"
    with pytest.raises(TokenError) as info:
        _verifier(path, (alg, other)).verify(Credentials(_signed(rsa_key, other)))
    assert info.value.reason == Reason.TOKEN_ALGORITHM_REJECTED  # one key, one algorithm


def test_rsa_key_bound_by_issuer_list(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write_jwks(tmp_path, "k.json", [_jwk(rsa_key, alg=OMIT)])
    assert _verifier(path, ("PS256", "ES256")).verify(Credentials(_signed(rsa_key, "PS256")))


def test_duplicate_kid_picks_the_key_for_the_alg(
    tmp_path: Path, other_ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = write_jwks(tmp_path, "k.json", [_jwk(other_ec_key, kid="shared"), _jwk(rsa_key, kid="shared")])
    v = _verifier(path, ("ES256", "RS256"))
    assert v.verify(Credentials(_signed(other_ec_key, "ES256", kid="shared")))
    assert v.verify(Credentials(_signed(rsa_key, "RS256", kid="shared")))


def test_no_kid_tries_each_candidate(tmp_path: Path, env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = write_jwks(tmp_path, "k.json", [other_ec_key, env.key])
    v = _verifier(path)
    assert v.verify(Credentials(_signed(env.key, "ES256", kid=OMIT)))
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(_signed(stranger, "ES256", kid=OMIT)))
    assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID


# --- jwks_uri ------------------------------------------------------------------------


class FakeJWKS:
    """A fetcher serving a mutable key list; can be told to fail."""

    def __init__(self, keys: list[PrivateKey], max_age: float | None = None) -> None:
        self.keys = keys
        self.max_age = max_age
        self.calls = 0
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self, uri: str, timeout: float) -> tuple[bytes, float | None]:
        with self.lock:
            self.calls += 1
            if self.fail:
                raise OSError("connection refused")
            return json.dumps({"keys": [_jwk(k) for k in self.keys]}).encode(), self.max_age


def _remote(fetch: FakeJWKS, clock: Clock, hook: list[str] | None = None, **config: Any) -> TokenVerifier:
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_uri="https://idp.test/jwks")
    cfg = replace(TokenConfig(), **config)
    return TokenVerifier(
        [issuer],
        cfg,
        clock=clock,
        jwks_fetch=fetch,
        on_jwks_refresh=hook.append if hook is not None else None,
        jwks_background_refresh=False,
    )


def _tok(key: PrivateKey, clock: Clock) -> Credentials:
    return Credentials(forge.token(key, forge.good_claims(clock.now)))


def test_remote_keys_fetched_at_start(env: Env) -> None:
    fetch, hook = FakeJWKS([env.key]), list[str]()
    v = _remote(fetch, env.clock, hook)
    assert v.verify(_tok(env.key, env.clock)).issuer == ISSUER
    assert fetch.calls == 1 and hook == ["success"]


def test_unknown_kid_refetches_at_most_once_per_interval(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    fetch = FakeJWKS([env.key])
    v = _remote(fetch, env.clock, jwks_min_refetch_seconds=30)
    env.clock.now += 31
    fetch.keys = [env.key, other_ec_key]  # the issuer rotates a key in
    assert v.verify(_tok(other_ec_key, env.clock))
    assert fetch.calls == 2
    stranger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(5):
        with pytest.raises(TokenError) as info:
            v.verify(_tok(stranger, env.clock))
        assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID
    assert fetch.calls == 2  # rate limited: the last fetch was just now
    env.clock.now += 30
    with pytest.raises(TokenError):
        v.verify(_tok(stranger, env.clock))
    assert fetch.calls == 3


def test_failed_refresh_keeps_the_last_good_keys(env: Env) -> None:
    fetch, hook = FakeJWKS([env.key]), list[str]()
    v = _remote(fetch, env.clock, hook)
    fetch.fail = True
    env.clock.now += 60
    with pytest.raises(TokenError):
        v.verify(Credentials(forge.unknown_kid(env.key, forge.good_claims(env.clock.now))))
    assert hook == ["success", "failure"]
    assert v.verify(_tok(env.key, env.clock))


def test_empty_key_set_counts_as_failure(env: Env) -> None:
    fetch, hook = FakeJWKS([env.key]), list[str]()
    v = _remote(fetch, env.clock, hook)
    fetch.keys = []
    env.clock.now += 60
    with pytest.raises(TokenError):
        v.verify(Credentials(forge.unknown_kid(env.key, forge.good_claims(env.clock.now))))
    assert hook[-1] == "failure"
    assert v.verify(_tok(env.key, env.clock))


def test_first_fetch_failure_fails_closed_then_recovers(env: Env) -> None:
    fetch = FakeJWKS([env.key])
    fetch.fail = True
    v = _remote(fetch, env.clock)
    with pytest.raises(TokenError) as info:
        v.verify(_tok(env.key, env.clock))
    assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID
    fetch.fail = False
    env.clock.now += 31
    assert v.verify(_tok(env.key, env.clock))


def test_token_without_kid_refetches_an_empty_key_set(env: Env) -> None:
    fetch = FakeJWKS([env.key])
    fetch.fail = True
    v = _remote(fetch, env.clock)
    fetch.fail = False
    env.clock.now += 31
    token = forge.token(env.key, forge.good_claims(env.clock.now), kid=OMIT)
    assert v.verify(Credentials(token))
    assert fetch.calls == 2


def test_key_removed_upstream_invalidates_cached_tokens(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    fetch = FakeJWKS([env.key, other_ec_key])
    v = _remote(fetch, env.clock)
    creds = _tok(env.key, env.clock)
    assert v.verify(creds)
    fetch.keys = [other_ec_key]  # env.key revoked
    env.clock.now += 31
    with pytest.raises(TokenError):  # an unknown kid forces the refresh
        v.verify(Credentials(forge.unknown_kid(other_ec_key, forge.good_claims(env.clock.now))))
    with pytest.raises(TokenError) as info:
        v.verify(creds)
    assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID


def test_background_refresh(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    fetch = FakeJWKS([env.key], max_age=0)  # refresh as often as allowed (1 s)
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_uri="https://idp.test/jwks")
    cfg = replace(TokenConfig(), jwks_min_refetch_seconds=0)
    v = TokenVerifier([issuer], cfg, clock=env.clock, jwks_fetch=fetch)
    try:
        fetch.keys = [other_ec_key]
        deadline = time.monotonic() + 5
        while fetch.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fetch.calls >= 2
        assert v.verify(_tok(other_ec_key, env.clock))
    finally:
        started = time.monotonic()
        v.close()
        assert time.monotonic() - started < 2


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/jwks":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/jwk-set+json")
        self.send_header("Cache-Control", "public, max-age=120")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server(env: Env) -> Iterator[str]:
    _Handler.body = json.dumps({"keys": [_jwk(env.key)]}).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetch(jwks_server: str) -> None:
    body, max_age = http_fetch(jwks_server + "/jwks", 5)
    assert json.loads(body)["keys"] and max_age == 120
    with pytest.raises(OSError):
        http_fetch(jwks_server + "/missing", 5)
    with pytest.raises(ValueError):
        http_fetch("file:///etc/passwd", 5)


def test_verifier_over_http(env: Env, jwks_server: str) -> None:
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_uri=jwks_server + "/jwks")
    hook: list[str] = []
    v = TokenVerifier([issuer], TokenConfig(), clock=env.clock, on_jwks_refresh=hook.append)
    try:
        assert v.verify(_tok(env.key, env.clock)).issuer == ISSUER
        assert hook == ["success"]
    finally:
        v.close()


class _IdP(http.server.BaseHTTPRequestHandler):
    """A real HTTP JWKS endpoint that can rotate keys and go down."""

    keys: list[PrivateKey] = []
    down = False
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        if type(self).down:
            self.send_error(503)
            return
        body = json.dumps({"keys": [_jwk(k) for k in type(self).keys]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/jwk-set+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_rotation_outage_and_refetch_limit_over_real_http(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    _IdP.keys, _IdP.down, _IdP.hits = [env.key], False, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IdP)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    results: list[str] = []
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_uri=uri)
    cfg = replace(TokenConfig(), jwks_min_refetch_seconds=30)
    v = TokenVerifier([issuer], cfg, clock=env.clock, on_jwks_refresh=results.append, jwks_background_refresh=False)
    try:
        assert v.verify(_tok(env.key, env.clock)).issuer == ISSUER
        assert (_IdP.hits, results) == (1, ["success"])
        # Rotation: the issuer publishes a new key; a token signed with it triggers one refetch.
        _IdP.keys = [env.key, other_ec_key]
        env.clock.now += 31
        assert v.verify(_tok(other_ec_key, env.clock))
        assert (_IdP.hits, results[-1]) == (2, "success")
        # Outage: the endpoint fails; the last good keys keep verifying both keys' tokens.
        _IdP.down = True
        env.clock.now += 31
        stranger = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(TokenError) as info:
            v.verify(_tok(stranger, env.clock))  # unknown kid: one refetch, which fails
        assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID
        assert (_IdP.hits, results[-1]) == (3, "failure")
        assert v.verify(_tok(env.key, env.clock)) and v.verify(_tok(other_ec_key, env.clock))
        # Unknown kids during the outage do not hammer the endpoint: at most one fetch per interval.
        for _ in range(10):
            with pytest.raises(TokenError):
                v.verify(_tok(stranger, env.clock))
        assert _IdP.hits == 3
    finally:
        v.close()
        server.shutdown()
        server.server_close()
