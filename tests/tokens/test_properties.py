"""Property tests: garbage, truncated, oversized and re-encoded tokens and proofs never
yield a VerifiedToken, and never raise anything but TokenError."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.errors import TokenError
from pep.tokens.claims import is_number
from pep.tokens.dpop import access_token_hash
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken
from tests.harness import forge
from tests.harness.forge import AUDIENCE, ISSUER, NOW

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
METHOD = "POST"
URI = "https://pep.test/pep.v1.Authorizer/Authorize"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class World:
    """One issuer, one verifier, one valid bearer token and one valid DPoP pair."""

    def __init__(self, directory: Path) -> None:
        key_path, jwks_path = devtoken.ensure_dev_keys(str(directory))
        self.key = devtoken.load_private_key(key_path)
        issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_file=jwks_path)
        self.verifier = TokenVerifier([issuer], TokenConfig(), clock=lambda: float(NOW))
        self.token = forge.token(self.key, forge.good_claims())
        self.dpop_key, self.dpop_jwk = devtoken.new_dpop_key()
        jkt = devtoken.jwk_thumbprint(self.dpop_jwk)
        self.bound = forge.token(self.key, forge.good_claims(cnf={"jkt": jkt}))

    def proof(self, **claims: Any) -> str:
        base = {"jti": "p", "htm": METHOD, "htu": URI, "iat": NOW, "ath": access_token_hash(self.bound)}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.dpop_jwk}
        return devtoken.sign_jws(self.dpop_key, header, forge.merge(base, claims))

    def outcome(self, creds: Credentials) -> VerifiedToken | TokenError:
        try:
            return self.verifier.verify(creds)
        except TokenError as e:
            return e  # anything else propagates and fails the test


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("props"))
    yield w
    w.verifier.close()


def _rejected(world: World, creds: Credentials) -> None:
    assert isinstance(world.outcome(creds), TokenError)


@SETTINGS
@given(text=st.text(max_size=300))
def test_arbitrary_text(world: World, text: str) -> None:
    _rejected(world, Credentials(text))


@SETTINGS
@given(
    parts=st.lists(st.text(alphabet=B64URL, min_size=0, max_size=120), min_size=1, max_size=6),
    prefix=st.sampled_from(["", "Bearer ", "DPoP ", "bearer\t"]),
)
def test_base64url_shaped_garbage(world: World, parts: list[str], prefix: str) -> None:
    _rejected(world, Credentials(prefix + ".".join(parts)))


@SETTINGS
@given(header=st.dictionaries(st.text(max_size=8), st.text(max_size=8)), payload=st.binary(max_size=200))
def test_encoded_garbage_segments(world: World, header: dict[str, str], payload: bytes) -> None:
    token = f"{forge.b64json(header)}.{forge.b64(payload)}.{forge.b64(b'sig')}"
    _rejected(world, Credentials(token))


@SETTINGS
@given(data=st.data())
def test_mutated_valid_token(world: World, data: st.DataObject) -> None:
    token = world.token
    kind = data.draw(st.sampled_from(["truncate", "replace", "insert", "delete", "swap"]))
    i = data.draw(st.integers(0, len(token) - 1))
    if kind == "truncate":
        mutated = token[:i]
    elif kind == "replace":
        mutated = token[:i] + data.draw(st.characters()) + token[i + 1 :]
    elif kind == "insert":
        mutated = token[:i] + data.draw(st.characters()) + token[i:]
    elif kind == "delete":
        mutated = token[:i] + token[i + 1 :]
    else:
        h, p, s = token.split(".")
        mutated = ".".join(data.draw(st.permutations([h, p, s])))
    assume(mutated.strip() != token)
    _rejected(world, Credentials(mutated))


@SETTINGS
@given(
    style=st.sampled_from(["padded", "standard", "spaced", "reordered", "escaped", "mime"]),
    segment=st.sampled_from([0, 1, 2]),
)
def test_reencoded_valid_token(world: World, style: str, segment: int) -> None:
    segs = world.token.split(".")
    raw = base64.urlsafe_b64decode(segs[segment] + "=" * (-len(segs[segment]) % 4))
    if style == "padded":
        new = base64.urlsafe_b64encode(raw).decode()
        assume("=" in new)
    elif style == "standard":
        new = base64.b64encode(raw).decode().rstrip("=")
        assume(new != segs[segment])
    elif style == "mime":
        new = base64.encodebytes(raw).decode().replace("\n", "\r\n")
    else:
        assume(segment < 2)
        obj = json.loads(raw)
        if style == "spaced":
            text = json.dumps(obj, indent=1)
        elif style == "reordered":
            text = json.dumps(dict(reversed(list(obj.items()))))
        else:
            text = json.dumps(obj, ensure_ascii=True).replace('"', '"', 1).replace("a", "\\u0061", 1)
        new = forge.b64(text)
        assume(new != segs[segment])
    segs[segment] = new
    _rejected(world, Credentials(".".join(segs)))


@SETTINGS
@given(extra=st.integers(1, 20_000))
def test_oversized(world: World, extra: int) -> None:
    result = world.outcome(Credentials(world.token + "A" * extra))
    assert isinstance(result, TokenError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)
claim_names = st.sampled_from(
    ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "azp", "scope", "scp", "act", "cnf", "may_act", "x"]
)


@SETTINGS
@given(changes=st.dictionaries(claim_names, json_values | st.just(forge.OMIT), max_size=4))
def test_signed_random_claims_are_checked(world: World, changes: dict[str, Any]) -> None:
    """A properly signed token with arbitrary claim values: if it is accepted, every
    documented claim rule holds for it."""
    claims = forge.good_claims(**changes)
    result = world.outcome(Credentials(forge.token(world.key, claims)))
    if isinstance(result, TokenError):
        return
    c = result.claims
    assert c["iss"] == ISSUER
    for name in ("sub", "jti"):
        assert isinstance(c[name], str) and c[name]
    assert isinstance(c.get("client_id", c.get("azp")), str)
    aud = c["aud"]
    assert aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud and all(isinstance(a, str) for a in aud))
    for name in ("exp", "iat", "nbf"):
        if name in c:
            assert is_number(c[name])
    assert c["exp"] > NOW - 30 and c["iat"] <= NOW + 30 and c.get("nbf", NOW) <= NOW + 30
    assert c["exp"] - c["iat"] <= 86400
    assert "cnf" not in c  # a bound token would need a proof or certificate here
    for name in ("act", "may_act"):
        assert name not in c or isinstance(c[name], dict)
    assert "scope" not in c or isinstance(c["scope"], str)


@SETTINGS
@given(text=st.text(max_size=300), method=st.text(max_size=10), uri=st.text(max_size=60))
def test_garbage_proofs(world: World, text: str, method: str, uri: str) -> None:
    _rejected(world, Credentials("DPoP " + world.bound, text, method, uri))


@SETTINGS
@given(data=st.data())
def test_mutated_valid_proof(world: World, data: st.DataObject) -> None:
    proof = world.proof(jti=uuid.uuid4().hex)  # fresh per run: hypothesis replays draws
    i = data.draw(st.integers(0, len(proof) - 1))
    kind = data.draw(st.sampled_from(["truncate", "replace", "insert"]))
    if kind == "truncate":
        mutated = proof[:i]
    elif kind == "replace":
        mutated = proof[:i] + data.draw(st.sampled_from(B64URL + ".=+/ ")) + proof[i + 1 :]
    else:
        mutated = proof[:i] + data.draw(st.sampled_from(B64URL + ".=")) + proof[i:]
    assume(mutated.strip() != proof)
    _rejected(world, Credentials("DPoP " + world.bound, mutated, METHOD, URI))
    # The untouched proof still works: failed attempts did not burn its jti.
    assert isinstance(world.outcome(Credentials("DPoP " + world.bound, proof, METHOD, URI)), VerifiedToken)


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(["jti", "htm", "htu", "iat", "ath", "x"]), json_values, max_size=3))
def test_signed_random_proof_claims(world: World, changes: dict[str, Any]) -> None:
    claims = {"jti": uuid.uuid4().hex, **changes}
    result = world.outcome(Credentials("DPoP " + world.bound, world.proof(**claims), METHOD, URI))
    if isinstance(result, VerifiedToken):
        merged = {"htm": METHOD, "htu": URI, "iat": NOW, "ath": access_token_hash(world.bound), **claims}
        assert merged["htm"] == METHOD and merged["ath"] == access_token_hash(world.bound)
        assert isinstance(merged["htu"], str) and is_number(merged["iat"])
        assert NOW - 300 <= merged["iat"] <= NOW + 30
        assert isinstance(merged["jti"], str) and merged["jti"]


@SETTINGS
@given(
    token=st.text(max_size=50),
    proof=st.text(max_size=50),
    method=st.text(max_size=10),
    uri=st.text(max_size=50),
    thumb=st.text(max_size=80),
)
def test_arbitrary_credentials(world: World, token: str, proof: str, method: str, uri: str, thumb: str) -> None:
    _rejected(world, Credentials(token, proof, method, uri, thumb))


@SETTINGS
@given(thumb=st.text(max_size=120))
def test_arbitrary_certificate_thumbprints(world: World, thumb: str) -> None:
    bound = forge.token(world.key, forge.good_claims(cnf={"x5t#S256": forge.b64(bytes(range(32)))}))
    assume(thumb.strip().rstrip("=") != forge.b64(bytes(range(32))) and thumb.strip().lower() != bytes(range(32)).hex())
    _rejected(world, Credentials(bound, client_cert_thumbprint=thumb))
