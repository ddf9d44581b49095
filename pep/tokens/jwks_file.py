"""Keys from a `jwks_file`, reloaded when the file changes; a bad file keeps the last good set.

The file is checked every `tokens.jwks_file_poll_seconds` (default 2) by a background thread,
and at once when a token names a `kid` the current set lacks: a change of modification time,
size or inode means "read it again" (a file modified in the last 2 seconds is also compared by
content, for file systems whose clock is coarse). The new file must pass every check the start-up load
applies (a JWK Set, at most MAX_JWKS_BYTES, every key well-formed, at least one usable signing
key); otherwise the previous keys stay in use, the file and the problem are logged, and the
refresh hook is told "failure" (`pep_jwks_refreshes_total{result="failure"}`). A good reload
swaps the whole `KeySet` at once, and tells the hook "success". Verified-token cache entries
remember the `KeySet` that verified them, so a rotation makes every cached token verify again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Collection

from pep.config import IssuerConfig, TokenConfig
from pep.errors import ConfigError
from pep.tokens.jwks import MAX_JWKS_BYTES, USE_SIG, KeySet, RefreshHook, StaticKeySource, key_uses, notify

log = logging.getLogger("pep.tokens.jwks")

# (st_mtime_ns, st_size, st_ino), or None while the file cannot be stat'ed.
_Stamp = tuple[int, int, int] | None
# A file modified less than this long ago is also compared by content (coarse file system clocks).
_RACY_SECONDS = 2.0


def _stamp(path: str) -> _Stamp:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileKeySource:
    """A `KeySource` over one JWKS file, reloaded on change. Thread-safe."""

    def __init__(
        self,
        path: str,
        allowed_algs: Collection[str],
        config_key: str,
        *,
        poll_seconds: float = 2.0,
        on_refresh: RefreshHook | None = None,
        uses: Collection[str] = USE_SIG,
        background: bool = True,
    ) -> None:
        self._path = path
        self._allowed = tuple(allowed_algs)
        self._config_key = config_key
        self._uses = tuple(uses)
        self._poll_seconds = max(0.05, poll_seconds)
        self._on_refresh = on_refresh
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            stamp: _Stamp = _stamp(path)
        except OSError:
            stamp = None  # from_file below says why
        # Start-up: any problem is a ConfigError, exactly as for a file read once.
        self._keys = self._load()
        self._stamp, self._digest = stamp, self._file_digest()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="pep-jwks-file", daemon=True)
            self._thread.start()

    @classmethod
    def of(
        cls, issuer: IssuerConfig, index: int, tokens: TokenConfig, on_refresh: RefreshHook | None, background: bool
    ) -> FileKeySource:
        """`issuers[index]`'s file source (a spiffe issuer's bundle counts its jwt-svid keys)."""
        assert issuer.jwks_file is not None
        return cls(
            issuer.jwks_file,
            issuer.algorithms,
            f"issuers[{index}].jwks_file",
            poll_seconds=tokens.jwks_file_poll_seconds,
            on_refresh=on_refresh,
            uses=key_uses(issuer.profile),
            background=background,
        )

    def current(self) -> KeySet:
        return self._keys

    def refresh_for_unknown_kid(self) -> KeySet:
        # A stat is cheap; if another thread is polling, its result is as good as ours.
        if self._lock.acquire(blocking=False):
            try:
                self._poll_locked()
            finally:
                self._lock.release()
        return self._keys

    def poll(self) -> bool:
        """Check the file once; True when a new key set was loaded."""
        with self._lock:
            return self._poll_locked()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception:  # never let the poller die
                log.exception("jwks_file %s: unexpected error while checking for a change", self._path)

    def _load(self) -> KeySet:
        """Read and check the file (a ConfigError naming the file and the problem)."""
        return StaticKeySource.from_file(self._path, self._allowed, self._config_key, self._uses).current()

    def _file_digest(self) -> bytes | None:
        try:
            with open(self._path, "rb") as f:
                return hashlib.sha256(f.read(MAX_JWKS_BYTES + 1)).digest()
        except OSError:
            return None

    def _poll_locked(self) -> bool:
        try:
            stamp: _Stamp = _stamp(self._path)
        except OSError as e:
            if self._stamp is not None:  # report a vanished file once, not every poll
                self._stamp = None
                self._failed(f"cannot read {self._path}: {e.strerror or e}")
            return False
        digest = None
        if stamp == self._stamp:
            # A rewrite in place of the same size within one timestamp tick leaves the stamp as it
            # was: while the file is that young, compare its contents too ("racy" like git's index).
            if stamp is None or time.time() - stamp[0] / 1e9 > _RACY_SECONDS:
                return False
            digest = self._file_digest()
            if digest == self._digest:
                return False
        self._stamp, self._digest = stamp, digest or self._file_digest()
        try:
            keys = self._load()
        except ConfigError as e:
            self._failed(e.problem)
            return False
        self._keys = keys
        log.info("jwks_file %s reloaded: %d keys", self._path, len(keys.keys))
        self._notify("success")
        return True

    def _failed(self, problem: str) -> None:
        log.warning("jwks_file reload failed (%s); keeping the last good keys", problem)
        self._notify("failure")

    def _notify(self, result: str) -> None:
        notify(self._on_refresh, result)
