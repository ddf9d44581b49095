"""Configuration: one frozen dataclass per section (`sections`), loaded and checked once at
start-up (`parse`). The names below are the package's public face: import them from `pep.config`.
"""

from __future__ import annotations

from pep.config.addresses import is_local_address, split_address
from pep.config.parse import load_config, parse_config
from pep.config.sections import (
    MODES,
    PROFILES,
    AuthzenConfig,
    Config,
    DecisionLogConfig,
    DelegationConfig,
    ExtAuthzConfig,
    ExtAuthzRule,
    IdentityConfig,
    IssuerClaims,
    IssuerConfig,
    ReloadConfig,
    TokenConfig,
)

__all__ = [
    "MODES",
    "PROFILES",
    "AuthzenConfig",
    "Config",
    "DecisionLogConfig",
    "DelegationConfig",
    "ExtAuthzConfig",
    "ExtAuthzRule",
    "IdentityConfig",
    "IssuerClaims",
    "IssuerConfig",
    "ReloadConfig",
    "TokenConfig",
    "is_local_address",
    "load_config",
    "parse_config",
    "split_address",
]
