"""OAuth Token Status List: status list tokens signed with the issuer's real key, served by a real
local HTTP server; the verifier reads each token's entry on every call (cache hits too).

Valid (0) passes; INVALID (1) and SUSPENDED (2) are token_revoked; an unreachable, unsigned,
mismatched, expired or oversized list fails closed; a malformed `status` claim is
token_claims_missing. Cache: refetched after `ttl` (or status_list_cache_seconds), a failed fetch
not retried for RETRY_SECONDS, single flight per list."""

from __future__ import annotations

import http.server
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from pep.dev.tokens import sign_jws
from pep.errors import TokenError
from pep.tokens import status_list
from pep.tokens.status_list import MAX_DECOMPRESSED_BYTES, StatusList, StatusLists
from tests.harness import forge
from tests.harness.tokens import Env


def pack(values: list[int], bits: int) -> bytes:
    """Entries packed as the draft says: entry i in bits i*bits.. of the byte array, low bits first."""
    data = bytearray((len(values) * bits + 7) // 8)
    for i, v in enumerate(values):
        byte, offset = divmod(i * bits, 8)
        data[byte] |= v << offset
    return bytes(data)


def list_token(key: Any, uri: str, now: float, values: list[int], bits: int = 1, **changes: Any) -> bytes:
    claims = forge.merge(
        {
            "sub": uri,
            "iat": int(now),
            "exp": int(now) + 3600,
            "ttl": 60,
            "status_list": {"bits": bits, "lst": forge.b64(zlib.compress(pack(values, bits)))},
        },
        changes,
    )
    header = {"typ": "statuslist+jwt", "alg": "ES256", "kid": forge.kid_of(key)}
    return sign_jws(key, header, claims).encode()


class _Lists(http.server.BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        _Lists.hits[self.path] = _Lists.hits.get(self.path, 0) + 1
        body = _Lists.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/statuslist+jwt")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def lists() -> Iterator[str]:
    _Lists.bodies, _Lists.hits = {}, {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Lists)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def verdict(env: Env, verifier: Any, uri: str, idx: int) -> str:
    token = env.token(env.claims(status={"status_list": {"idx": idx, "uri": uri}}))
    try:
        env.verify(token, verifier)
    except TokenError as e:
        return f"{e.reason}: {e}"
    return "valid"


def test_valid_invalid_suspended_and_the_cache(env: Env, lists: str) -> None:
    uri = lists + "/list/1"
    # idx 0 valid, 1 invalid, 2 suspended, 3 valid, 4 an application-specific value.
    _Lists.bodies["/list/1"] = list_token(env.key, uri, env.clock.now, [0, 1, 2, 0, 3], bits=2)
    v = env.verifier()
    assert verdict(env, v, uri, 0) == "valid"
    assert verdict(env, v, uri, 1) == "token_revoked: token is INVALID in its issuer's status list"
    assert verdict(env, v, uri, 2) == "token_revoked: token is SUSPENDED in its issuer's status list"
    assert verdict(env, v, uri, 3) == "valid"
    assert verdict(env, v, uri, 4) == "token_revoked: token is status 0x03 in its issuer's status list"
    assert "has no entry 99" in verdict(env, v, uri, 99)
    assert _Lists.hits["/list/1"] == 1  # one fetch serves them all
    # The same token, verified and cached, is denied from the next call once its entry changes
    # (after the list's ttl, 60 s); a token without a status claim never fetches anything.
    token = env.token(env.claims(status={"status_list": {"idx": 0, "uri": uri}}))
    env.verify(token, v)
    _Lists.bodies["/list/1"] = list_token(env.key, uri, env.clock.now, [1, 1, 2, 0], bits=2)
    env.clock.now += 30
    env.verify(token, v)  # within ttl: the list held
    env.clock.now += 31
    with pytest.raises(TokenError, match="INVALID") as e:
        env.verify(token, v)
    assert e.value.reason == "token_revoked" and _Lists.hits["/list/1"] == 2
    env.verify(env.token(env.claims(jti="other")), v)


def test_fail_closed(env: Env, lists: str, other_ec_key: Any) -> None:
    now = env.clock.now
    cases = {
        "/missing": None,
        "/foreign-key": list_token(other_ec_key, lists + "/foreign-key", now, [0]),
        "/wrong-sub": list_token(env.key, "https://elsewhere.test/l", now, [0]),
        "/expired": list_token(env.key, lists + "/expired", now - 7200, [0]),
        "/no-iat": list_token(env.key, lists + "/no-iat", now, [0], iat=forge.OMIT),
        "/bits": list_token(env.key, lists + "/bits", now, [0], bits=3),
        "/garbage": b"not a jws",
        "/bomb": None,
    }
    bomb_claims = {"sub": lists + "/bomb", "iat": int(now), "status_list": {"bits": 1, "lst": ""}}
    bomb_claims["status_list"]["lst"] = forge.b64(zlib.compress(bytes(MAX_DECOMPRESSED_BYTES + 1)))
    header = {"typ": "statuslist+jwt", "alg": "ES256", "kid": forge.kid_of(env.key)}
    cases["/bomb"] = sign_jws(env.key, header, bomb_claims).encode()
    _Lists.bodies.update({k: b for k, b in cases.items() if b is not None})
    v = env.verifier()
    expected = {
        "/missing": "HTTP 404",
        "/foreign-key": "signature does not verify",
        "/wrong-sub": "its sub is not the uri",
        "/expired": "it has expired",
        "/no-iat": "it has no iat",
        "/bits": "bits 1, 2, 4 or 8",
        "/garbage": "not a compact JWS",
        "/bomb": f"inflates past {MAX_DECOMPRESSED_BYTES} bytes",
    }
    for path, fragment in expected.items():
        said = verdict(env, v, lists + path, 0)
        assert said.startswith("token_revoked: token status list unavailable: ") and fragment in said, (path, said)
    # Unreachable: nothing listens there. A failed fetch is not retried for RETRY_SECONDS.
    dead = "http://127.0.0.1:9/list"
    assert "token status list unavailable: fetch failed" in verdict(env, v, dead, 0)
    _Lists.bodies["/missing"] = list_token(env.key, lists + "/missing", now, [0])
    assert "HTTP 404" in verdict(env, v, lists + "/missing", 0)  # remembered
    env.clock.now += status_list.RETRY_SECONDS + 1
    assert verdict(env, v, lists + "/missing", 0) == "valid"  # retried, and fixed


@pytest.mark.parametrize(
    "status",
    [
        "revoked",
        {},
        {"status_list": []},
        {"status_list": {"idx": -1, "uri": "https://x.test/l"}},
        {"status_list": {"idx": True, "uri": "https://x.test/l"}},
        {"status_list": {"idx": 1, "uri": "file:///etc/passwd"}},
        {"status_list": {"idx": 1}},
    ],
)
def test_a_malformed_status_claim(env: Env, status: Any) -> None:
    with pytest.raises(TokenError) as e:
        env.verify(env.token(env.claims(status=status)))
    assert e.value.reason == "token_claims_missing" and "claim status" in str(e.value)


def test_one_fetch_for_concurrent_callers(env: Env) -> None:
    calls: list[str] = []
    gate = threading.Event()
    body = list_token(env.key, "https://lists.test/1", env.clock.now, [0])

    def slow(uri: str, timeout: float) -> bytes:
        calls.append(uri)
        gate.wait(5)
        return body

    lists = StatusLists(300, 30, clock=env.clock, fetch=slow)
    v = env.verifier()
    source = v._issuers[forge.ISSUER].source  # the issuer's real key set
    claims = {"status": {"status_list": {"idx": 0, "uri": "https://lists.test/1"}}}
    errors: list[BaseException] = []

    def check() -> None:
        try:
            lists.check(claims, forge.ISSUER, source, ("ES256",))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert calls == ["https://lists.test/1"] and not errors


def test_entries_are_read_low_bits_first() -> None:
    # The draft's example: 1-bit statuses 1,0,0,1,1,1,0,1 | 1,1,0,0,0,1,0,1 are the bytes B9 A3.
    lst = StatusList(1, bytes([0xB9, 0xA3]), 0, None)
    assert [lst.status(i) for i in range(16)] == [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    assert [StatusList(4, bytes([0x21]), 0, None).status(i) for i in (0, 1)] == [1, 2]


def test_the_cache_period_is_validated() -> None:
    from pep.config import parse_config
    from pep.errors import ConfigError

    base = {"policies": "/nonexistent"}
    assert parse_config(base).tokens.status_list_cache_seconds == 300
    assert parse_config({**base, "tokens": {"status_list_cache_seconds": 30}}).tokens.status_list_cache_seconds == 30
    for bad in (0, -5, "soon"):
        with pytest.raises(ConfigError, match="status_list_cache_seconds"):
            parse_config({**base, "tokens": {"status_list_cache_seconds": bad}})
