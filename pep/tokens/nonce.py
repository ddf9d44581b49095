"""Server-provided DPoP nonces (RFC 9449 8, 9): stateless HMAC windows, nothing stored per nonce.

Window w = floor(now / period); nonce(w) = base64url(w as 8 big-endian bytes || HMAC-SHA256(secret,
w)[:16]), 32 characters. A proof's `nonce` is valid when it is nonce(w), or nonce(w - 1) while
now - w * period < grace. The current window's pair is computed once and cached, so memory is one
cached entry whatever the traffic.

The secret is 32 random bytes of this process; `share` swaps in the fleet's, kept by a
`SecretStore` (Redis, pep/state/nonce_secret.py, wired by pep/server.py), so a nonce one replica
hands out is valid on every replica. While the store cannot be reached the process keeps its own
secret (its nonces are valid on this replica only) and retries in the background. The secret and
the nonce are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Sequence
from typing import Protocol

from pep.errors import TokenError
from pep.reasons import Reason

log = logging.getLogger(__name__)

SECRET_BYTES = 32
MAC_BYTES = 16
NONCE_CHARS = 32  # base64url of 8 + 16 bytes, unpadded
# Waits between attempts to reach the secret store after a failure at start (the last repeats).
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
_MAX_WINDOW = 2**64 - 1

NEEDS_NONCE = "DPoP proof needs the server's nonce"
STALE_NONCE = "DPoP proof has a stale nonce"
UNKNOWN_NONCE = "DPoP proof has a nonce this server did not issue"


class SecretStore(Protocol):
    """Where a fleet keeps its one nonce secret."""

    def shared_secret(self, candidate: bytes) -> bytes:
        """The fleet's secret: `candidate` when none was kept yet, else the one kept.
        Raises (any exception) when the store cannot be reached or holds no usable secret."""
        ...


class NonceError(TokenError):
    """A proof without a valid server nonce; `dpop_nonce` is the current one, for the answer."""

    def __init__(self, detail: str, dpop_nonce: str) -> None:
        super().__init__(detail, Reason.DPOP_NONCE_REQUIRED)
        self.dpop_nonce = dpop_nonce


def _nonce(secret: bytes, window: int) -> str:
    stamp = window.to_bytes(8, "big")
    mac = hmac.new(secret, stamp, hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(stamp + mac).rstrip(b"=").decode("ascii")


class Nonces:
    """Issues and checks nonces (thread-safe: the cache is one tuple, replaced whole)."""

    def __init__(self, period: int, grace: int, secret: bytes | None = None) -> None:
        if period < 1 or not 0 <= grace <= period:
            raise ValueError("period must be positive and grace from 0 to period")
        self._period = period
        self._grace = grace
        self._secret = secret if secret is not None else os.urandom(SECRET_BYTES)
        # (secret, window, nonce(window), nonce(window - 1))
        self._cached: tuple[bytes, int, str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shared = False  # the secret is the fleet's

    def _pair(self, window: int) -> tuple[str, str]:
        secret, cached = self._secret, self._cached
        if cached is not None and cached[0] is secret and cached[1] == window:
            return cached[2], cached[3]
        current, previous = _nonce(secret, window), _nonce(secret, window - 1)
        self._cached = (secret, window, current, previous)
        return current, previous

    def _window(self, now: float) -> int:
        return min(max(int(now // self._period), 1), _MAX_WINDOW)  # a clock before 1970 never underflows

    def current(self, now: float) -> str:
        """The nonce a client should send next."""
        return self._pair(self._window(now))[0]

    def check(self, nonce: object, now: float) -> None:
        """Raise `NonceError` (carrying the current nonce) unless `nonce` is valid at `now`."""
        window = self._window(now)
        current, previous = self._pair(window)
        if nonce is None or nonce == "":
            raise NonceError(NEEDS_NONCE, current)
        if isinstance(nonce, str) and len(nonce) == NONCE_CHARS and nonce.isascii():
            given = nonce.encode("ascii")
            if hmac.compare_digest(given, current.encode("ascii")):
                return
            in_grace = now - window * self._period < self._grace
            if in_grace and hmac.compare_digest(given, previous.encode("ascii")):
                return
            if self._issued_before(given, window):
                raise NonceError(STALE_NONCE, current)
        raise NonceError(UNKNOWN_NONCE, current)

    def _issued_before(self, given: bytes, window: int) -> bool:
        """`given` is one this secret made for an earlier window (only to word the refusal)."""
        try:
            raw = base64.urlsafe_b64decode(given + b"=" * (-len(given) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 8 + MAC_BYTES:
            return False
        issued = int.from_bytes(raw[:8], "big")
        return issued < window and hmac.compare_digest(_nonce(self._secret, issued).encode("ascii"), given)

    def share(self, store: SecretStore, retry: Sequence[float] = RETRY_SECONDS) -> bool:
        """Use the fleet's secret from `store`. True when it answered now; else this process's
        secret stays, a warning is logged and a background thread retries until it answers."""
        if self._try(store, first=True):
            return True
        self._thread = threading.Thread(target=self._retry, args=(store, tuple(retry)), name="pep-dpop-nonce")
        self._thread.daemon = True
        self._thread.start()
        return False

    def _try(self, store: SecretStore, *, first: bool = False) -> bool:
        try:
            secret = store.shared_secret(self._secret)
        except Exception as e:  # any failure: keep the local secret
            if first:
                log.warning(
                    "DPoP nonces: the fleet's nonce secret is unavailable (%s); nonces are valid on this "
                    "replica only until it answers (retrying in the background)",
                    type(e).__name__,
                )
            return False
        if len(secret) < SECRET_BYTES:
            log.error(
                "DPoP nonces: the fleet's nonce secret is shorter than %d bytes; kept this replica's", SECRET_BYTES
            )
            return False
        self._secret = bytes(secret)
        self.shared = True
        if not first:
            log.warning(
                "DPoP nonces: the fleet's nonce secret is in use now; nonces this replica handed out before are "
                "refused once, with the fleet's nonce"
            )
        return True

    def _retry(self, store: SecretStore, waits: tuple[float, ...]) -> None:
        attempt = 0
        while not self._stop.wait(waits[min(attempt, len(waits) - 1)]):
            if self._try(store):
                return
            attempt += 1

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
