"""The `mcp` section's rules beyond types: what the proxy needs before it can start."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from urllib.parse import urlsplit

from pep.config.sections import McpConfig
from pep.errors import ConfigError

# Cedar entity ids may be any string; this keeps `McpServer::"<id>"` readable in policies and logs.
_SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _url(value: str, key: str, *, path_ok: bool = True) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(key, f"must be an http(s) URL without a query or fragment, got {value!r}")
    if not path_ok and parts.path not in ("", "/"):
        raise ConfigError(key, f"must be scheme://host[:port] without a path, got {value!r}")
    return value


def check_mcp(cfg: McpConfig) -> McpConfig:
    if not cfg.listen:
        for key in ("upstream", "resource", "server_id"):
            if getattr(cfg, key):
                raise ConfigError(f"mcp.{key}", "needs mcp.listen (the proxy is off without it)")
        return cfg
    for key in ("upstream", "resource", "server_id"):
        if not getattr(cfg, key):
            raise ConfigError(f"mcp.{key}", "is required when mcp.listen is set")
    _url(cfg.upstream, "mcp.upstream")
    _url(cfg.resource, "mcp.resource")
    if not _SERVER_ID.match(cfg.server_id):
        raise ConfigError("mcp.server_id", f"must be 1-128 letters, digits or ._:- , got {cfg.server_id!r}")
    if not cfg.path.startswith("/") or any(c in cfg.path for c in "?#") or cfg.path.startswith("/.well-known/"):
        raise ConfigError("mcp.path", f"must be an absolute path without a query, got {cfg.path!r}")
    for i, server in enumerate(cfg.authorization_servers):
        _url(server, f"mcp.authorization_servers[{i}]")
    public_url = cfg.public_url.rstrip("/")
    if public_url:
        _url(public_url, "mcp.public_url", path_ok=False)
    for name in ("max_body_bytes", "threads", "max_connections_per_client"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"mcp.{name}", "must be at least 1")
    for name in ("timeout_seconds", "upstream_timeout_seconds", "header_timeout_seconds"):
        value = getattr(cfg, name)
        if not (0 < value and math.isfinite(value)):
            raise ConfigError(f"mcp.{name}", f"must be a positive number, got {value}")
    return replace(cfg, public_url=public_url)
