"""Pure pieces of the ext_authz mapping: rules, entity references, XFCC, config errors."""

from __future__ import annotations

import pytest

from pep.api.client_cert import xfcc_hash
from pep.api.ext_authz import challenges, target_uri
from pep.config import parse_config
from pep.config.routes import compile_route, first_match, parse_entity_ref
from pep.errors import ConfigError
from pep.reasons import Reason
from tests.harness.envoy import check_request


@pytest.mark.parametrize(
    ("methods", "path", "resource", "request_", "expected"),
    [
        ((), "/docs/{id}", 'Doc::"{id}"', ("GET", "/docs/a"), ("read", "Doc", "a")),
        (("GET",), "/docs/{id}", 'Doc::"{id}"', ("get", "/docs/a"), ("read", "Doc", "a")),
        (("GET",), "/docs/{id}", 'Doc::"{id}"', ("POST", "/docs/a"), None),
        ((), "/docs/{id}", 'Doc::"{id}"', ("GET", "/docs/a/b"), None),
        ((), "/docs/{id}", 'Doc::"{id}"', ("GET", "/docs/"), None),
        ((), "/files/{path+}", 'File::"{path}"', ("GET", "/files/a/b.txt"), ("read", "File", "a/b.txt")),
        ((), "/docs/{id}", 'Doc::"{id}"', ("GET", "/docs/a%20b"), ("read", "Doc", "a b")),
        ((), "/v1/{t}/{id}", 'App::Doc::"{t}-{id}"', ("GET", "/v1/x/y"), ("read", "App::Doc", "x-y")),
        ((), "/static", 'Site::"home"', ("GET", "/static"), ("read", "Site", "home")),
        ((), "/a.b", 'Site::"x"', ("GET", "/aXb"), None),  # literal text is literal
    ],
)
def test_rule_matching(methods, path, resource, request_, expected) -> None:
    route = compile_route(methods, path, "read", resource)
    assert first_match([route], *request_) == expected


@pytest.mark.parametrize(
    ("methods", "path", "resource", "problem"),
    [
        ((), "docs/{id}", 'Doc::"{id}"', "starts with '/'"),
        ((), "/docs/{id}/{id}", 'Doc::"{id}"', "twice"),
        ((), "/docs/{id", 'Doc::"x"', "bad placeholder"),
        ((), "/docs/{id}", 'Doc::"{other}"', "does not capture"),
        ((), "/docs/{id}", "Doc:{id}", 'Type::"id"'),
        (("get",), "/docs/{id}", 'Doc::"{id}"', "upper-case"),
    ],
)
def test_bad_rules_are_refused(methods, path, resource, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        compile_route(methods, path, "read", resource)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Doc::"plan"', ("Doc", "plan")),
        ('App::Doc::"a::b"', ("App::Doc", "a::b")),
        (' Doc::"say \\"hi\\""', ("Doc", 'say "hi"')),
    ],
)
def test_entity_refs(text, expected) -> None:
    assert parse_entity_ref(text) == expected


@pytest.mark.parametrize("text", ["plan", 'Doc::""', 'Doc::"a', '::"a"', 'Doc::"a" x', "Doc::'a'"])
def test_bad_entity_refs(text) -> None:
    with pytest.raises(ValueError):
        parse_entity_ref(text)


def test_xfcc_takes_the_last_element_and_respects_quotes() -> None:
    value = 'Hash=aa;Subject="CN=a,O=b";URI=x,By=y;Hash=bb;Subject="CN=c;d"'
    assert xfcc_hash(value) == "bb"
    assert xfcc_hash('Subject="CN=a,Hash=cc"') == ""
    assert xfcc_hash("") == ""


def test_htu_drops_query_and_fragment() -> None:
    http = check_request(path="/a/b?x=1#f", scheme="HTTPS", host="h:8443").attributes.request.http
    assert target_uri(http) == "https://h:8443/a/b"
    assert target_uri(check_request(path="").attributes.request.http) == "https://api.example.com/"


def test_challenge_for_mtls_and_garbage_tokens_is_bearer() -> None:
    assert challenges(Reason.TOKEN_MALFORMED, "", "garbage", realm="", dpop_algorithms=("ES256",)) == [
        'Bearer error="invalid_token", error_description="The access token is malformed"'
    ]


@pytest.mark.parametrize(
    ("ext_authz", "key"),
    [
        ({"rules": [{"path": "/x", "action": "read"}]}, "ext_authz.rules[0].resource"),
        ({"rules": [{"path": "/x/{id}", "action": "read", "resource": 'Doc::"{y}"'}]}, "ext_authz.rules[0]"),
        ({"rules": [{"path": "/x", "action": "read", "resource": 'D::"x"', "verb": "GET"}]}, "ext_authz.rules[0].verb"),
        ({"action_header": "X-Pep-Action"}, "ext_authz.action_header"),
        ({"realm": 'a"b'}, "ext_authz.realm"),
        ({"enabled": "yes"}, "ext_authz.enabled"),
        ({"unknown": 1}, "ext_authz.unknown"),
        ("on", "ext_authz"),
    ],
)
def test_config_errors_name_the_key(ext_authz, key) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"ext_authz": ext_authz})
    assert e.value.key == key


def test_config_defaults_and_rules() -> None:
    cfg = parse_config({}).ext_authz
    assert (cfg.enabled, cfg.action_header, cfg.resource_header, cfg.rules) == (
        True,
        "x-pep-action",
        "x-pep-resource",
        (),
    )
    cfg = parse_config(
        {"ext_authz": {"rules": [{"methods": "get", "path": "/d/{id}", "action": "read", "resource": 'D::"{id}"'}]}}
    ).ext_authz
    assert cfg.rules[0].methods == ("GET",)
