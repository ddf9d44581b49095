"""Development keys, tokens and proofs."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.tokens.dpop import access_token_hash
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness import forge


def test_ensure_dev_keys_creates_key_and_jwks(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    key_path, jwks_path = devtoken.ensure_dev_keys(str(directory))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    key = devtoken.load_private_key(key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    (jwk,) = json.loads(Path(jwks_path).read_text())["keys"]
    assert jwk["alg"] == "ES256" and jwk["use"] == "sig"
    assert jwk["kid"] == devtoken.jwk_thumbprint(jwk)
    assert "d" not in jwk


def test_ensure_dev_keys_is_idempotent(tmp_path: Path) -> None:
    key_path, jwks_path = devtoken.ensure_dev_keys(str(tmp_path))
    before = (Path(key_path).read_bytes(), Path(jwks_path).read_text())
    assert devtoken.ensure_dev_keys(str(tmp_path)) == (key_path, jwks_path)
    assert (Path(key_path).read_bytes(), Path(jwks_path).read_text()) == before
    os.remove(jwks_path)
    devtoken.ensure_dev_keys(str(tmp_path))
    assert Path(jwks_path).read_text() == before[1]
    Path(jwks_path).write_text('{"keys": []}')
    devtoken.ensure_dev_keys(str(tmp_path))
    assert Path(jwks_path).read_text() == before[1]


def _verifier(jwks_path: str, now: float) -> TokenVerifier:
    issuer = IssuerConfig(forge.ISSUER, (forge.AUDIENCE,), ("ES256",), jwks_file=jwks_path)
    return TokenVerifier([issuer], TokenConfig(), clock=lambda: now)


def test_mint_token_claims(tmp_path: Path) -> None:
    key_path, jwks_path = devtoken.ensure_dev_keys(str(tmp_path))
    now = 1_800_000_000
    token = devtoken.mint_token(
        key_path,
        issuer=forge.ISSUER,
        audience=[forge.AUDIENCE, "other"],
        sub="alice",
        act_chain=["bot-current", "bot-prior", "bot-first"],
        scopes=["read", "pay"],
        ttl_seconds=120,
        extra_claims={"groups": ["finance"]},
        x5t_s256=forge.b64(bytes(32)),
        now=now,
    )
    header = forge.decode_segment(token.split(".")[0])
    claims = forge.decode_segment(token.split(".")[1])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    assert claims["act"] == {"sub": "bot-current", "act": {"sub": "bot-prior", "act": {"sub": "bot-first"}}}
    assert claims["client_id"] == "bot-current"
    assert claims["iat"] == now and claims["exp"] == now + 120
    assert claims["scope"] == "read pay" and claims["groups"] == ["finance"]
    assert claims["cnf"] == {"x5t#S256": forge.b64(bytes(32))}
    assert claims["jti"]
    verified = _verifier(jwks_path, now).verify(Credentials(token, client_cert_thumbprint=forge.b64(bytes(32))))
    assert verified.binding == "mtls"


def test_mint_token_defaults(tmp_path: Path) -> None:
    key_path, _ = devtoken.ensure_dev_keys(str(tmp_path))
    token = devtoken.mint_token(key_path, issuer=forge.ISSUER, audience=forge.AUDIENCE, sub="agent-x", now=1000)
    claims = forge.decode_segment(token.split(".")[1])
    assert claims["client_id"] == "agent-x"
    assert "act" not in claims and "scope" not in claims and "cnf" not in claims
    other = devtoken.mint_token(key_path, issuer=forge.ISSUER, audience=forge.AUDIENCE, sub="agent-x", now=1000)
    assert forge.decode_segment(other.split(".")[1])["jti"] != claims["jti"]


def test_dpop_round_trip(tmp_path: Path) -> None:
    key_path, jwks_path = devtoken.ensure_dev_keys(str(tmp_path))
    now = 1_800_000_000
    dpop_key, jwk = devtoken.new_dpop_key()
    token = devtoken.mint_token(
        key_path, issuer=forge.ISSUER, audience=forge.AUDIENCE, sub="u", dpop_jkt=devtoken.jwk_thumbprint(jwk), now=now
    )
    uri = "https://pep.test/pep.v1.Authorizer/Authorize"
    proof = devtoken.mint_dpop_proof(dpop_key, jwk, htm="POST", htu=uri, access_token="DPoP " + token, now=now)
    header, claims = (forge.decode_segment(s) for s in proof.split(".")[:2])
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
    assert claims["ath"] == access_token_hash(token) and claims["htm"] == "POST" and claims["iat"] == now
    assert _verifier(jwks_path, now).verify(Credentials("DPoP " + token, proof, "POST", uri)).binding == "dpop"
    bare = devtoken.mint_dpop_proof(dpop_key, jwk, htm="POST", htu=uri, access_token=None, jti="fixed")
    assert "ath" not in forge.decode_segment(bare.split(".")[1])
    assert forge.decode_segment(bare.split(".")[1])["jti"] == "fixed"


def test_the_longest_chain_a_dev_token_nests_is_one_pep_reads(tmp_path: Path) -> None:
    key_path, jwks_path = devtoken.ensure_dev_keys(str(tmp_path))
    chain = [f"bot-{i}" for i in range(devtoken.MAX_ACT_CHAIN)]
    token = devtoken.mint_token(key_path, issuer=forge.ISSUER, audience=forge.AUDIENCE, sub="alice", act_chain=chain)
    node = _verifier(jwks_path, time.time()).verify(Credentials(token)).claims["act"]
    seen = []
    while node is not None:  # the nesting, walked without recursion
        seen.append(node["sub"])
        node = node.get("act")
    assert seen == chain


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"act_chain": [f"a{i}" for i in range(devtoken.MAX_ACT_CHAIN + 1)]},
            f"the {devtoken.MAX_ACT_CHAIN} a development",
        ),
        ({"act_chain": [f"a{i}" for i in range(1200)]}, "has 1200 agents"),
        ({"act_chain": "assistant"}, "act_chain must be a list of strings"),
        ({"act_chain": ["ok", ""]}, "non-empty strings"),
        ({"act_chain": ["ok", 7]}, "non-empty strings"),
        ({"scopes": "files:read"}, "scopes must be a list of strings"),
    ],
)
def test_mint_token_refuses_what_it_cannot_mint(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    key_path, _ = devtoken.ensure_dev_keys(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        devtoken.mint_token(key_path, issuer=forge.ISSUER, audience=forge.AUDIENCE, sub="alice", **kw)  # type: ignore[arg-type]


def test_a_corrupt_dev_key_names_its_file(tmp_path: Path) -> None:
    (tmp_path / devtoken.KEY_FILE).write_text("not a key\n")
    with pytest.raises(ValueError, match=f"{devtoken.KEY_FILE}: not an unencrypted PEM private key"):
        devtoken.ensure_dev_keys(str(tmp_path))


def test_a_deep_jwks_file_is_rewritten(tmp_path: Path) -> None:
    key_path, jwks_path = devtoken.ensure_dev_keys(str(tmp_path))
    Path(jwks_path).write_text("[" * 20000 + "]" * 20000)
    assert devtoken.ensure_dev_keys(str(tmp_path)) == (key_path, jwks_path)
    assert json.loads(Path(jwks_path).read_text())["keys"][0]["kid"]
