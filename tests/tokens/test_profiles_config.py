"""`issuers[].profile` in the config file, `pep config show`, and profiles through a real pep server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep.cli import main
from pep.config import parse_config
from pep.dev import tokens as devtoken
from pep.errors import ConfigError
from tests.harness import forge
from tests.harness.server import AUDIENCE, ISSUER, Harness

BASE = {"issuer": "https://idp.example", "audiences": ["pep"], "jwks_uri": "https://idp.example/jwks"}


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ({"profile": "okat"}, "issuers[0].profile", ["'okat'", "okta", "cognito", "rfc9068"]),
        ({"profile": 3}, "issuers[0].profile", ["3", "known"]),
        ({"claims": {"agnet": "cid"}}, "issuers[0].claims.agnet", ["unknown key", "agent"]),
        ({"claims": "cid"}, "issuers[0].claims", ["mapping"]),
        ({"claims": {"agent": 5}}, "issuers[0].claims.agent", ["claim name"]),
        ({"claims": {"scopes": [""]}}, "issuers[0].claims.scopes", ["non-empty"]),
        ({"required_claims": "jti"}, None, None),  # a single name is fine
        ({"required_claims": [1]}, "issuers[0].required_claims", ["non-empty"]),
        ({"required_claims": ["a|"]}, "issuers[0].required_claims", ["each side"]),
        ({"accept_typ": ["dpop+jwt"]}, "issuers[0].accept_typ", ["dpop+jwt", "never"]),
        ({"accept_typ": ["id+jwt"]}, "issuers[0].accept_typ", ["id+jwt"]),
        ({"accept_typ": []}, "issuers[0].accept_typ", ["non-empty"]),
        ({"accept_typ": [None]}, "issuers[0].accept_typ", ["strings"]),
        ({"profiles": "okta"}, "issuers[0].profiles", ["unknown key"]),
    ],
)
def test_bad_profile_settings_stop_start_up_naming_the_key(extra: dict[str, Any], key: str | None, words: Any) -> None:
    raw = {"issuers": [{**BASE, **extra}]}
    if key is None:
        parse_config(raw)
        return
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert e.value.key == key
    for word in words:
        assert word in str(e.value)


def test_accept_typ_is_normalised_and_the_default_is_todays() -> None:
    cfg = parse_config(
        {"issuers": [{**BASE, "accept_typ": ["application/AT+JWT", "JWT", ""]}, {**BASE, "issuer": "b"}]}
    )
    assert cfg.issuers[0].accept_typ == ("at+jwt", "jwt", "")
    assert (cfg.issuers[1].profile, cfg.issuers[1].accept_typ, cfg.issuers[1].required_claims) == (
        "rfc9068",
        None,
        None,
    )


def _write(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "pep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_config_show_prints_each_issuers_resolved_mapping_and_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {
        "issuers": [
            {**BASE, "jwks_uri": "https://user:s3cret@idp.example/jwks?token=t0ps3cret", "profile": "entra"},
            {**BASE, "issuer": "https://cognito.example", "profile": "cognito", "claims": {"user": "username"}},
            {**BASE, "issuer": "https://plain.example"},
        ],
        "tokens": {"accept_jwt_typ": True},
        "identity": {"user_groups_claim": "roles"},
    }
    assert main(["config", "show", "--config", _write(tmp_path, raw)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "t0ps3cret" not in out
    shown = yaml.safe_load(out)
    entra, cognito, plain = shown["issuers"]
    assert entra["profile"] == "entra" and entra["claims"]["agent"] == ["azp", "appid"]
    assert entra["accept_typ"] == ["jwt", ""] and "jti" not in entra["required_claims"]
    assert cognito["audience_claim"] == "client_id" and cognito["claims"]["user"] == ["username"]
    # The default profile shows the global settings it applies, as before.
    assert plain["profile"] == "rfc9068" and plain["accept_typ"] == ["at+jwt", "jwt"]
    assert plain["claims"]["groups"] == ["roles"] and "jti" in plain["required_claims"]


def test_config_show_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"issuers": [{**BASE, "profile": "okat"}]})
    assert main(["config", "show", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "issuers[0].profile" in err and "okta" in err
    with pytest.raises(SystemExit) as e:
        main(["config", "show"])
    assert e.value.code == 2
    assert main(["config", "show", "--config", str(tmp_path / "missing.yaml")]) == 2


def _profiled(tmp_path: Path, factory: Callable[..., Harness], profile: str) -> Harness:
    _, jwks_path = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    issuer = {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks_path, "algorithms": ["ES256"]}
    return factory(issuers=[{**issuer, "profile": profile}])


def _sign(h: Harness, claims: dict[str, Any], typ: Any) -> str:
    return forge.token(devtoken.load_private_key(h.key_path), claims, typ=typ)


def _now() -> int:
    import time

    return int(time.time())


def test_keycloak_tokens_through_a_real_server(tmp_path: Path, harness_factory: Callable[..., Harness]) -> None:
    h = _profiled(tmp_path, harness_factory, "keycloak")
    n = _now()
    common = {"iss": ISSUER, "aud": AUDIENCE, "iat": n, "exp": n + 300, "typ": "Bearer", "azp": "worker"}
    service = {**common, "jti": "kc-1", "sub": "5f0c-uuid", "preferred_username": "service-account-worker"}
    r = h.authorize(_sign(h, {**service, "scope": "docs"}, "JWT"))
    assert (r.reason, r.agent, r.on_behalf_of, list(r.delegation_chain)) == ("allowed", "worker", "", ["worker"])
    user = {**common, "jti": "kc-2", "sub": "alice-uuid", "preferred_username": "alice", "scope": "docs"}
    r = h.authorize(_sign(h, user, "JWT"))
    assert (r.reason, r.agent, r.on_behalf_of) == ("allowed", "worker", "alice-uuid")
    r = h.authorize(_sign(h, {**user, "typ": "ID"}, "JWT"))
    assert r.reason == "token_type_invalid"
    r = h.authorize(_sign(h, user, "dpop+jwt"))
    assert r.reason == "token_type_invalid"


def test_okta_and_cognito_tokens_through_a_real_server(tmp_path: Path, harness_factory: Callable[..., Harness]) -> None:
    n = _now()
    okta = {"ver": 1, "jti": "AT.1", "iss": ISSUER, "aud": AUDIENCE, "iat": n, "exp": n + 300, "cid": "worker"}
    okta_user = {**okta, "uid": "00u1", "sub": "alice@example.com", "scp": ["docs"]}
    default = harness_factory()
    assert default.authorize(_sign(default, okta_user, forge.OMIT)).reason == "token_type_invalid"
    h = _profiled(tmp_path, harness_factory, "okta")
    r = h.authorize(_sign(h, okta_user, forge.OMIT))
    assert (r.reason, r.agent, r.on_behalf_of) == ("allowed", "worker", "alice@example.com")
    r = h.authorize(_sign(h, {**okta_user, "nonce": "n1"}, forge.OMIT))
    assert r.reason == "token_type_invalid"

    _, jwks_path = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    cog = harness_factory(
        issuers=[{"issuer": ISSUER, "audiences": ["worker"], "jwks_file": jwks_path, "profile": "cognito"}]
    )
    token = {"iss": ISSUER, "iat": n, "exp": n + 300, "jti": "c1", "token_use": "access", "client_id": "worker"}
    r = cog.authorize(_sign(cog, {**token, "sub": "worker", "scope": "docs"}, forge.OMIT))
    assert (r.reason, r.agent, r.on_behalf_of) == ("allowed", "worker", "")
    r = cog.authorize(_sign(cog, {**token, "sub": "worker", "client_id": "loner"}, forge.OMIT))
    assert r.reason == "token_audience_invalid"
