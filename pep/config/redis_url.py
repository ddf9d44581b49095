"""The `state.redis_url` check, shared by the config loader and `pep admin --state`."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pep.errors import ConfigError


def check_redis_url(url: str, key: str) -> str:
    """A Redis URL pep can use (redis://, rediss:// for TLS, unix://); the message never echoes a password."""
    try:
        parts = urlsplit(url)
        port, db = parts.port, parts.path.strip("/")
    except ValueError:
        raise ConfigError(key, "is not a valid URL (expected redis://host:port/db or rediss://...)") from None
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise ConfigError(key, "a Unix socket URL must be absolute: unix:///path/redis.sock")
        return url
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(key, f"must start with redis://, rediss:// or unix://, got {parts.scheme or 'no'} scheme")
    if not parts.hostname or (port is not None and not 0 < port < 65536) or (db and not db.isdigit()):
        raise ConfigError(key, "must be redis://[:password@]host[:port][/db], db a number")
    return url


def redact_redis_url(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{netloc}", parts.path, parts.query, ""))
