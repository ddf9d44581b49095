"""Parse and check the config file: every problem names its key (`issuers[0].audiences: ...`).

Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import yaml

from pep.algorithms import SUPPORTED_ALGORITHMS
from pep.config.addresses import is_local_address
from pep.config.anomaly import parse_anomaly
from pep.config.issuer_profile import profile_fields
from pep.config.mcp import check_mcp
from pep.config.redis_url import check_redis_url
from pep.config.routes import compile_route
from pep.config.sections import (
    MODES,
    STATE_ON_UNAVAILABLE,
    AuthzenConfig,
    Config,
    DecisionLogConfig,
    DelegationConfig,
    ExtAuthzConfig,
    ExtAuthzRule,
    IdentityConfig,
    IssuerConfig,
    McpConfig,
    ReloadConfig,
    StateConfig,
    TokenConfig,
)
from pep.config.values import as_list as _list
from pep.config.values import as_number as _number
from pep.config.values import as_str as _str
from pep.config.values import check_keys as _check_keys
from pep.config.values import like as _like
from pep.errors import ConfigError


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
        except UnicodeDecodeError as e:
            raise ConfigError("--config", f"{path} is not UTF-8 (byte {e.start})") from None
        except RecursionError:
            raise ConfigError("--config", f"{path} is nested too deeply") from None
        except OSError as e:
            raise ConfigError("--config", f"cannot read {path}: {e.strerror or e}") from None
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
    _check_keys(raw, Config, "", set())
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
    if "policies_require_schema" in raw:
        values["policies_require_schema"] = _like(raw["policies_require_schema"], True, "policies_require_schema")
    if "mode" in raw:
        mode = _str(raw["mode"], "mode")
        if mode not in MODES:
            raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        values["mode"] = mode
    if "decision_memo_size" in raw:
        values["decision_memo_size"] = _like(raw["decision_memo_size"], 0, "decision_memo_size")
        if values["decision_memo_size"] > 1_000_000:
            raise ConfigError("decision_memo_size", f"must be at most 1000000, got {values['decision_memo_size']}")
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
    mcp: McpConfig = _section(raw, "mcp", McpConfig)
    values["mcp"] = check_mcp(replace(mcp, listen=_address(mcp.listen, "mcp.listen")) if mcp.listen else mcp)
    values["state"] = _state(raw.get("state"), base_dir)
    values["anomaly"] = parse_anomaly(raw.get("anomaly"))
    log = _section(raw, "decision_log", DecisionLogConfig)
    if log.sink != "stdout":
        log = replace(log, sink=_path(log.sink, base_dir))
    values["decision_log"] = log
    cfg = replace(cfg, **values)
    _check_semantics(cfg)
    return cfg


LOG_SYNC = ("write", "fsync")


def _check_semantics(cfg: Config) -> None:
    t = cfg.tokens
    for algs, key in ((t.dpop_algorithms, "tokens.dpop_algorithms"),):
        for alg in algs:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ConfigError(key, f"unsupported algorithm {alg!r}")
    for name in ("leeway_seconds", "max_token_bytes", "max_lifetime_seconds", "dpop_max_age_seconds"):
        if getattr(t, name) < 0 or (name != "leeway_seconds" and getattr(t, name) == 0):
            raise ConfigError(f"tokens.{name}", "must be a positive number")
    if t.status_list_cache_seconds < 1:
        raise ConfigError("tokens.status_list_cache_seconds", "must be a positive number of seconds")
    if t.leeway_seconds > 300:
        raise ConfigError("tokens.leeway_seconds", "must be at most 300 (RFC 9068: a few minutes at most)")
    if not 0.05 <= t.jwks_file_poll_seconds <= 3600:
        raise ConfigError("tokens.jwks_file_poll_seconds", f"must be 0.05 to 3600, got {t.jwks_file_poll_seconds}")
    if not 1 <= t.dpop_nonce_seconds <= 86400:
        raise ConfigError("tokens.dpop_nonce_seconds", f"must be 1 to 86400, got {t.dpop_nonce_seconds}")
    if t.dpop_nonce_grace_seconds > t.dpop_nonce_seconds:
        raise ConfigError("tokens.dpop_nonce_grace_seconds", "must be at most tokens.dpop_nonce_seconds")
    if cfg.delegation.max_depth < 1:
        raise ConfigError("delegation.max_depth", "must be at least 1")
    if cfg.reload.settle_seconds > 10 or cfg.reload.poll_seconds <= 0:
        raise ConfigError("reload", "settle_seconds must be at most 10 and poll_seconds positive")
    if cfg.decision_log.queue_size < 1:
        raise ConfigError("decision_log.queue_size", "must be at least 1")
    if cfg.decision_log.sync not in LOG_SYNC:
        raise ConfigError("decision_log.sync", f"must be one of {', '.join(LOG_SYNC)}, got {cfg.decision_log.sync!r}")
    if not 1024 <= cfg.decision_log.max_inputs_bytes <= 1024 * 1024:
        raise ConfigError("decision_log.max_inputs_bytes", "must be from 1024 to 1048576")
    for path in cfg.decision_log.redact_context:
        if not path or any(not part for part in path.split(".")):
            raise ConfigError("decision_log.redact_context", f"{path!r} is not a dotted path such as card.number")
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
            raise ConfigError(
                key, "must be a mapping with issuer, audiences, jwks_file or jwks_uri, algorithms, profile, claims"
            )
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
        nonce = _like(item.get("dpop_nonce", False), False, f"{key}.dpop_nonce")
        extra = profile_fields(item, key)
        out.append(IssuerConfig(issuer, audiences, algorithms, jwks_file, jwks_uri, **extra, dpop_nonce=nonce))
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
    for name in ("max_body_bytes", "max_evaluations", "threads", "max_connections_per_client"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"authzen.{name}", "must be at least 1")
    for name in ("timeout_seconds", "header_timeout_seconds"):
        if not 0 < getattr(cfg, name) < float("inf"):  # NaN fails this too
            raise ConfigError(f"authzen.{name}", f"must be a positive number, got {getattr(cfg, name)}")
    if cfg.base_url:
        if not cfg.base_url.startswith(("https://", "http://")) or any(c in cfg.base_url for c in "?#"):
            raise ConfigError("authzen.base_url", "must be an http(s) URL without a query or fragment")
        cfg = replace(cfg, base_url=cfg.base_url.rstrip("/"))
    return cfg


def _state(value: Any, base_dir: str) -> StateConfig:
    if value is None:
        return StateConfig()
    if not isinstance(value, Mapping):
        raise ConfigError("state", "must be a mapping")
    _check_keys(value, StateConfig, "state.", set())
    kw: dict[str, Any] = {}
    for key in ("redis_url", "file"):  # "" (or null) leaves it off
        if value.get(key) not in (None, ""):
            kw[key] = _str(value[key], f"state.{key}")
    if "redis_url" in kw:
        kw["redis_url"] = check_redis_url(kw["redis_url"], "state.redis_url")
    if "file" in kw:
        if "redis_url" in kw:
            raise ConfigError("state.file", "is for a pep without Redis: with state.redis_url, flips are kept in Redis")
        kw["file"] = _path(kw["file"], base_dir)
    if "key_prefix" in value:
        kw["key_prefix"] = _str(value["key_prefix"], "state.key_prefix")
    if "timeout_ms" in value:
        kw["timeout_ms"] = _like(value["timeout_ms"], 0, "state.timeout_ms")
        if not 1 <= kw["timeout_ms"] <= 10_000:
            raise ConfigError("state.timeout_ms", f"must be 1 to 10000, got {kw['timeout_ms']}")
    if "on_unavailable" in value:
        kw["on_unavailable"] = _str(value["on_unavailable"], "state.on_unavailable")
        if kw["on_unavailable"] not in STATE_ON_UNAVAILABLE:
            raise ConfigError("state.on_unavailable", f"must be local or deny, got {kw['on_unavailable']!r}")
    return StateConfig(**kw)


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
