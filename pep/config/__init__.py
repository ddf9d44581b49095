"""Configuration: one frozen dataclass per section (`sections`), loaded and checked once at
start-up (`parse`). The names below are the package's public face: import them from `pep.config`.
"""

from __future__ import annotations

from pep.config.addresses import is_local_address, split_address
from pep.config.parse import load_config, parse_config
from pep.config.redis_url import check_redis_url
from pep.config.sections import (
    MODES,
    PROFILES,
    AnomalyConfig,
    AnomalyRule,
    AuthzenConfig,
    Config,
    DecisionLogConfig,
    DelegationConfig,
    ExtAuthzConfig,
    ExtAuthzRule,
    IdentityConfig,
    IssuerClaims,
    IssuerConfig,
    McpConfig,
    ReloadConfig,
    StateConfig,
    TokenConfig,
)

__all__ = [
    "MODES",
    "PROFILES",
    "AnomalyConfig",
    "AnomalyRule",
    "AuthzenConfig",
    "Config",
    "DecisionLogConfig",
    "DelegationConfig",
    "ExtAuthzConfig",
    "ExtAuthzRule",
    "IdentityConfig",
    "IssuerClaims",
    "IssuerConfig",
    "McpConfig",
    "ReloadConfig",
    "StateConfig",
    "TokenConfig",
    "check_redis_url",
    "is_local_address",
    "load_config",
    "parse_config",
    "split_address",
]
