"""The fleet's one DPoP nonce secret in Redis (pep/tokens/nonce.py `SecretStore`).

Key `P dpop_nonce:secret` under `state.key_prefix` (P): 32 bytes as hex, set once with SET NX by
whichever replica starts first, then read back by every replica, so a nonce one replica hands out
is valid on all of them. Asked at start-up and, while Redis is away, from a background retry
(never on the request path). The value is never logged.
"""

from __future__ import annotations

import redis

from pep.state.redis_kills import connect

SECRET_HEX_CHARS = 64


def secret_key(prefix: str) -> str:
    return f"{prefix}dpop_nonce:secret"


class RedisNonceSecret:
    """SET NX, then GET: the secret some replica kept first, or `candidate` when none had."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._key = secret_key(prefix)

    def shared_secret(self, candidate: bytes) -> bytes:
        client: redis.Redis = connect(self._url)
        try:
            client.set(self._key, candidate.hex(), nx=True)
            value = client.get(self._key)
        finally:
            client.close()
        if not isinstance(value, str) or len(value) != SECRET_HEX_CHARS:
            raise ValueError(f"{self._key} does not hold {SECRET_HEX_CHARS} hex digits")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{self._key} does not hold {SECRET_HEX_CHARS} hex digits") from None
