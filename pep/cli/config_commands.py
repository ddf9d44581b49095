"""`pep config show`: the effective configuration as YAML, each issuer's resolved claim mapping included."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from pep.cli.runtime_commands import _load_config
from pep.config.anomaly import REQUIRED
from pep.tokens.profiles import describe, resolve


def add_parser(sub: Any) -> None:
    c = sub.add_parser(
        "config",
        help="inspect a config file",
        description="Inspect a pep config file without starting pep.",
    )
    c_sub = c.add_subparsers(title="config commands", metavar="ACTION", required=True)
    show = c_sub.add_parser(
        "show",
        help="print the effective configuration as YAML",
        description="Load and check a config file, then print the effective configuration as YAML: every "
        "default filled in, relative paths resolved, and each issuer's resolved profile (where pep reads "
        "the agent, user, scopes and groups, the required claims, the accepted typ values and the audience "
        "claim). Never prints a secret. Exit 2 on a config error.",
    )
    show.add_argument("--config", "-c", required=True, help="the YAML config file to show")
    show.set_defaults(func=cmd_config_show, command="pep config show")


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)  # the same checks and messages as `pep serve --config`
    data = _plain(dataclasses.asdict(cfg))
    issuers = []
    for issuer, raw in zip(cfg.issuers, data["issuers"], strict=True):
        raw = {k: v for k, v in raw.items() if k not in ("profile", "claims", "required_claims", "accept_typ")}
        if raw.get("jwks_uri"):
            raw["jwks_uri"] = _redact_url(raw["jwks_uri"])
        issuers.append({**raw, **describe(resolve(issuer, cfg.tokens, cfg.identity))})
    data["issuers"] = issuers
    # Each rule with the fields its kind uses, in the order the config file shows them.
    data["anomaly"]["rules"] = [
        {"name": r.name, "kind": r.kind, **{k: getattr(r, k) for k in REQUIRED[r.kind]}, "action": r.action}
        for r in cfg.anomaly.rules
    ]
    if cfg.state.redis_url:  # its password, if any, is masked
        data["state"]["redis_url"] = _redact_url(cfg.state.redis_url)
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _redact_url(url: str) -> str:
    """No user:password, query or fragment (where credentials hide) in what is printed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.username or parts.password:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))
