"""Configuration: one frozen dataclass per section, loaded and checked once at start-up.

Every problem names its key (`issuers[0].audiences: ...`). Unknown keys are errors, so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from pep.config.routes import compile_route
from pep.errors import ConfigError

# Asymmetric JWS algorithms pep can verify. HMAC and `none` are never accepted.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
MODES = ("enforce", "dry_run")


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwks_file: str | None = None
    jwks_uri: str | None = None


@dataclass(frozen=True)
class TokenConfig:
    leeway_seconds: int = 30
    max_token_bytes: int = 8192
    # RFC 9068 wants `at+jwt`; some identity providers still send `JWT`.
    accept_jwt_typ: bool = False
    # RFC 9068 section 2.2. `client_id` is also satisfied by `azp`.
    required_claims: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
    max_lifetime_seconds: int = 86400
    dpop_max_age_seconds: int = 300
    dpop_future_skew_seconds: int = 30
    dpop_algorithms: tuple[str, ...] = ("ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA", "Ed25519")
    dpop_replay_cache_size: int = 100_000
    # jwks_uri issuers: refresh period when the JWKS response has no max-age, and the
    # least time between refetches triggered by an unknown `kid`.
    jwks_cache_seconds: int = 300
    jwks_min_refetch_seconds: int = 30


@dataclass(frozen=True)
class DelegationConfig:
    max_depth: int = 4
    require_grants: bool = True


@dataclass(frozen=True)
class IdentityConfig:
    # Claim holding the user's groups, which become `Group` parents of the user.
    user_groups_claim: str = "groups"
    # Token claims copied onto the `User` entity as attributes.
    user_claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReloadConfig:
    # Quiet time after the last file event before a reload: one reload per burst of writes.
    settle_seconds: float = 0.15
    # Content-hash check that catches any event the watcher missed.
    poll_seconds: float = 5.0
    # Turn the filesystem watcher off (the periodic check still runs).
    watch: bool = True


@dataclass(frozen=True)
class DecisionLogConfig:
    sink: str = "stdout"
    required: bool = False
    queue_size: int = 10_000
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 5
    # Claims never written to the log, on top of the token, proof and keys.
    redact_claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzenConfig:
    """The OpenID AuthZEN Authorization API over HTTP (SPEC 10); off while `listen` is empty."""

    listen: str = ""
    # Take the body's subject as given (loopback or Unix socket only); else it comes from a token.
    trust_subject: bool = False
    max_body_bytes: int = 1024 * 1024
    max_evaluations: int = 1000
    # Idle limit for reading a request or writing a response, per connection.
    timeout_seconds: float = 10.0
    threads: int = 8
    # `policy_decision_point` in the metadata document; default: http:// plus the bound address.
    base_url: str = ""


@dataclass(frozen=True)
class ExtAuthzRule:
    """Method + path pattern to action and resource (see `pep.config.routes`)."""

    path: str
    action: str
    resource: str
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtAuthzConfig:
    """Envoy ext_authz (`envoy.service.auth.v3.Authorization`) on the gRPC port."""

    enabled: bool = True
    # Request headers naming the action and the resource (`Type::"id"`); "" turns one off.
    action_header: str = "x-pep-action"
    resource_header: str = "x-pep-resource"
    # Use Envoy's x-forwarded-client-cert `Hash=` when the peer certificate is not sent.
    trust_xfcc: bool = True
    # `realm` of WWW-Authenticate challenges; "" leaves it out.
    realm: str = ""
    rules: tuple[ExtAuthzRule, ...] = ()


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    admin_listen: str = "127.0.0.1:50052"
    # The admin API may listen beyond loopback only when this says so.
    admin_allow_remote: bool = False
    policies: str = "./policies"
    mode: str = "enforce"
    issuers: tuple[IssuerConfig, ...] = ()
    tokens: TokenConfig = field(default_factory=TokenConfig)
    delegation: DelegationConfig = field(default_factory=DelegationConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    decision_log: DecisionLogConfig = field(default_factory=DecisionLogConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    ext_authz: ExtAuthzConfig = field(default_factory=ExtAuthzConfig)
    authzen: AuthzenConfig = field(default_factory=AuthzenConfig)
    # Extra listeners (e.g. a Unix socket beside TCP), each like `listen`.
    extra_listen: tuple[str, ...] = ()
    # Seconds to let in-flight calls finish on SIGTERM.
    shutdown_grace_seconds: float = 5.0


def load_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read `path` (YAML) if given, apply `overrides` (dotted keys), and check it all."""
    raw: dict[str, Any] = {}
    base_dir = "."
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError("--config", f"{path} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("<root>", f"{path} must hold a mapping of keys")
        raw = loaded
        base_dir = os.path.dirname(os.path.abspath(path))
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return parse_config(raw, base_dir)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_config(raw: Mapping[str, Any], base_dir: str = ".") -> Config:
    """Build a `Config` from plain data. Relative paths resolve against `base_dir`."""
    _check_keys(raw, Config, "", {"issuers", "tokens", "delegation", "identity", "decision_log", "reload", "ext_authz"})
    cfg = Config()
    values: dict[str, Any] = {}
    for key in ("listen", "metrics_listen", "admin_listen"):
        if key in raw:
            # An empty metrics or admin address turns that listener off.
            off = key != "listen" and raw[key] in ("", None)
            values[key] = "" if off else _address(raw[key], key)
    if "admin_allow_remote" in raw:
        values["admin_allow_remote"] = _like(raw["admin_allow_remote"], False, "admin_allow_remote")
    if "extra_listen" in raw:
        values["extra_listen"] = tuple(
            _address(v, f"extra_listen[{i}]") for i, v in enumerate(_list(raw["extra_listen"], "extra_listen"))
        )
    if "policies" in raw:
        values["policies"] = _path(_str(raw["policies"], "policies"), base_dir)
    else:
        values["policies"] = _path(cfg.policies, base_dir)
    if "mode" in raw:
        mode = _str(raw["mode"], "mode")
        if mode not in MODES:
            raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        values["mode"] = mode
    if "shutdown_grace_seconds" in raw:
        values["shutdown_grace_seconds"] = _number(raw["shutdown_grace_seconds"], "shutdown_grace_seconds", 0)
    if "issuers" in raw:
        values["issuers"] = _issuers(raw["issuers"], base_dir)
    values["tokens"] = _section(raw, "tokens", TokenConfig)
    values["delegation"] = _section(raw, "delegation", DelegationConfig)
    values["identity"] = _section(raw, "identity", IdentityConfig)
    values["reload"] = _section(raw, "reload", ReloadConfig)
    values["ext_authz"] = _ext_authz(raw.get("ext_authz"))
    values["authzen"] = _authzen(raw)
    log = _section(raw, "decision_log", DecisionLogConfig)
    if log.sink != "stdout":
        log = replace(log, sink=_path(log.sink, base_dir))
    values["decision_log"] = log
    cfg = replace(cfg, **values)
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: Config) -> None:
    t = cfg.tokens
    for algs, key in ((t.dpop_algorithms, "tokens.dpop_algorithms"),):
        for alg in algs:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ConfigError(key, f"unsupported algorithm {alg!r}")
    for name in ("leeway_seconds", "max_token_bytes", "max_lifetime_seconds", "dpop_max_age_seconds"):
        if getattr(t, name) < 0 or (name != "leeway_seconds" and getattr(t, name) == 0):
            raise ConfigError(f"tokens.{name}", "must be a positive number")
    if t.leeway_seconds > 300:
        raise ConfigError("tokens.leeway_seconds", "must be at most 300 (RFC 9068: a few minutes at most)")
    if cfg.delegation.max_depth < 1:
        raise ConfigError("delegation.max_depth", "must be at least 1")
    if cfg.reload.settle_seconds > 10 or cfg.reload.poll_seconds <= 0:
        raise ConfigError("reload", "settle_seconds must be at most 10 and poll_seconds positive")
    if cfg.decision_log.queue_size < 1:
        raise ConfigError("decision_log.queue_size", "must be at least 1")
    if cfg.admin_listen == cfg.listen and not cfg.listen.endswith(":0"):
        raise ConfigError("admin_listen", "must differ from listen: the admin API never shares the public port")
    if cfg.admin_listen and not cfg.admin_allow_remote and not is_local_address(cfg.admin_listen):
        raise ConfigError(
            "admin_listen",
            f"{cfg.admin_listen} is not a loopback address or Unix socket; the kill switch API is local only "
            "unless admin_allow_remote: true",
        )


def _issuers(value: Any, base_dir: str) -> tuple[IssuerConfig, ...]:
    out = []
    seen: set[str] = set()
    for i, item in enumerate(_list(value, "issuers")):
        key = f"issuers[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(key, "must be a mapping with issuer, audiences, jwks_file or jwks_uri, algorithms")
        _check_keys(item, IssuerConfig, key + ".", set())
        if "issuer" not in item:
            raise ConfigError(f"{key}.issuer", "is required")
        issuer = _str(item["issuer"], f"{key}.issuer")
        if issuer in seen:
            raise ConfigError(f"{key}.issuer", f"{issuer!r} is configured twice")
        seen.add(issuer)
        if "audiences" not in item:
            raise ConfigError(f"{key}.audiences", "is required: a token's aud must name this service")
        audiences = tuple(_str(a, f"{key}.audiences") for a in _list(item["audiences"], f"{key}.audiences"))
        if not audiences:
            raise ConfigError(f"{key}.audiences", "must name at least one audience")
        algorithms = IssuerConfig.algorithms
        if "algorithms" in item:
            algorithms = tuple(_str(a, f"{key}.algorithms") for a in _list(item["algorithms"], f"{key}.algorithms"))
            if not algorithms:
                raise ConfigError(f"{key}.algorithms", "must name at least one algorithm")
            for alg in algorithms:
                if alg not in SUPPORTED_ALGORITHMS:
                    raise ConfigError(
                        f"{key}.algorithms",
                        f"{alg!r} is not allowed (asymmetric only: {', '.join(sorted(SUPPORTED_ALGORITHMS))})",
                    )
        jwks_file = item.get("jwks_file")
        jwks_uri = item.get("jwks_uri")
        if (jwks_file is None) == (jwks_uri is None):
            raise ConfigError(key, "needs exactly one of jwks_file or jwks_uri")
        if jwks_file is not None:
            jwks_file = _path(_str(jwks_file, f"{key}.jwks_file"), base_dir)
        if jwks_uri is not None:
            jwks_uri = _str(jwks_uri, f"{key}.jwks_uri")
            if not jwks_uri.startswith(("https://", "http://")):
                raise ConfigError(f"{key}.jwks_uri", "must be an http(s) URL")
        out.append(IssuerConfig(issuer, audiences, algorithms, jwks_file, jwks_uri))
    return tuple(out)


def _authzen(raw: Mapping[str, Any]) -> AuthzenConfig:
    cfg: AuthzenConfig = _section(raw, "authzen", AuthzenConfig)
    if cfg.listen:
        cfg = replace(cfg, listen=_address(cfg.listen, "authzen.listen"))
    elif cfg.trust_subject:
        raise ConfigError("authzen.trust_subject", "needs authzen.listen")
    if cfg.trust_subject and not is_local_address(cfg.listen):
        raise ConfigError(
            "authzen.trust_subject",
            f"{cfg.listen} is not a loopback address or Unix socket; a listener that takes the subject as given "
            "must be local only",
        )
    for name in ("max_body_bytes", "max_evaluations", "threads"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"authzen.{name}", "must be at least 1")
    if cfg.timeout_seconds <= 0:
        raise ConfigError("authzen.timeout_seconds", "must be a positive number")
    if cfg.base_url:
        if not cfg.base_url.startswith(("https://", "http://")) or any(c in cfg.base_url for c in "?#"):
            raise ConfigError("authzen.base_url", "must be an http(s) URL without a query or fragment")
        cfg = replace(cfg, base_url=cfg.base_url.rstrip("/"))
    return cfg


def _ext_authz(value: Any) -> ExtAuthzConfig:
    if value is None:
        return ExtAuthzConfig()
    if not isinstance(value, Mapping):
        raise ConfigError("ext_authz", "must be a mapping")
    _check_keys(value, ExtAuthzConfig, "ext_authz.", set())
    defaults = ExtAuthzConfig()
    kw: dict[str, Any] = {}
    for key in ("enabled", "trust_xfcc"):
        if key in value:
            kw[key] = _like(value[key], getattr(defaults, key), f"ext_authz.{key}")
    for key in ("action_header", "resource_header", "realm"):
        if key in value:
            # "" (or null) turns that header or the realm off.
            kw[key] = "" if value[key] in ("", None) else _str(value[key], f"ext_authz.{key}")
    cfg = replace(defaults, **kw)
    for key in ("action_header", "resource_header"):
        header = getattr(cfg, key)
        if header != header.lower() or any(c in header for c in " :\t,"):
            raise ConfigError(f"ext_authz.{key}", f"must be a lower-case header name, got {header!r}")
    if any(c in cfg.realm for c in '"\\'):
        raise ConfigError("ext_authz.realm", "must not contain quotes or backslashes")
    rules = []
    for i, item in enumerate(_list(value.get("rules") or [], "ext_authz.rules")):
        key = f"ext_authz.rules[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(key, "must be a mapping with path, action, resource and optional methods")
        _check_keys(item, ExtAuthzRule, key + ".", set())
        for required in ("path", "action", "resource"):
            if required not in item:
                raise ConfigError(f"{key}.{required}", "is required")
        methods = item.get("methods", ())
        if isinstance(methods, str):
            methods = [methods]
        rule = ExtAuthzRule(
            path=_str(item["path"], f"{key}.path"),
            action=_str(item["action"], f"{key}.action"),
            resource=_str(item["resource"], f"{key}.resource"),
            methods=tuple(_str(m, f"{key}.methods").upper() for m in _list(methods, f"{key}.methods")),
        )
        try:
            compile_route(rule.methods, rule.path, rule.action, rule.resource)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
        rules.append(rule)
    return replace(cfg, rules=tuple(rules))


def _section(raw: Mapping[str, Any], name: str, cls: type[Any]) -> Any:
    value = raw.get(name)
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        raise ConfigError(name, "must be a mapping")
    _check_keys(value, cls, name + ".", set())
    defaults = cls()
    kwargs = {}
    for f in fields(cls):
        if f.name not in value:
            continue
        key = f"{name}.{f.name}"
        default = getattr(defaults, f.name)
        kwargs[f.name] = _like(value[f.name], default, key)
    return cls(**kwargs)


def _like(value: Any, default: Any, key: str) -> Any:
    """Coerce `value` to the type of `default`, or say why it cannot be."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be a whole number, got {value!r}")
        if value < 0:
            raise ConfigError(key, f"must not be negative, got {value}")
        return value
    if isinstance(default, float):
        return _number(value, key, 0)
    if isinstance(default, str):
        return _str(value, key)
    if isinstance(default, tuple):
        return tuple(_str(v, key) for v in _list(value, key))
    raise ConfigError(key, "unsupported setting")  # pragma: no cover


def _check_keys(raw: Mapping[str, Any], cls: type[Any], prefix: str, extra: set[str]) -> None:
    known = {f.name for f in fields(cls)} | extra
    for key in raw:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(known))})")


def _list(value: Any, key: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"must be a list, got {value!r}")
    return list(value)


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, key: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(key, f"must be a number >= {minimum}, got {value!r}")
    return float(value)


def _path(value: str, base_dir: str) -> str:
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))


def _address(value: Any, key: str) -> str:
    """Check a listen address: `host:port` (port 0 picks a free one) or `unix:///path`."""
    text = _str(value, key)
    if text.startswith("unix://"):
        if not text[len("unix://") :].startswith("/"):
            raise ConfigError(key, f"a Unix socket address must be absolute: unix:///path, got {text!r}")
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"must be host:port or unix:///path, got {text!r}")
    host = host.strip("[]")
    if host not in ("", "localhost", "0.0.0.0", "::"):  # noqa: S104 - parsing, not binding
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(key, f"host must be an IP address or localhost, got {host!r}") from None
    return text


def split_address(address: str) -> tuple[str, int]:
    """`host:port` to (host, port), with brackets removed from IPv6 hosts."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - parsing, not binding


def is_local_address(address: str) -> bool:
    """True for a Unix socket or a loopback host."""
    if address.startswith("unix://"):
        return True
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
