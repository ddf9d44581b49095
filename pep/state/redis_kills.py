"""Admin kill-switch flips shared by the fleet in Redis.

Layout under `state.key_prefix` (P): the hash `P kills`, one field `kind:id` per entry (its
value the JSON reason, since, actor and source); `P kills:epoch`, set once the hash is seeded; the
channel `P kills:events`, one message per flip. A background thread applies each message by
rereading the hash (one HGETALL), and rereads it every RESYNC_SECONDS anyway, so a missed
message cannot leave a replica behind. Requests never wait on Redis: they read memory.

Redis that lost its data (no epoch) gets back every entry this replica holds, so a restart
without persistence never resurrects a killed agent. Flips made while Redis is away hold at
once on this replica and are written when it returns.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any

import redis

from pep.metrics import Metrics
from pep.state.kills import Key, KillStore, StoredKill

log = logging.getLogger(__name__)

# Full reread of the hash, whatever pub/sub said; and the wait before reconnecting.
RESYNC_SECONDS = 5.0
RETRY_SECONDS = 0.5
# Background and admin calls (never on the request path): connect and each command.
CALL_TIMEOUT_SECONDS = 2.0
POLL_SECONDS = 0.2
ERRORS = (redis.RedisError, OSError)


def connect(url: str, timeout: float = CALL_TIMEOUT_SECONDS, **extra: Any) -> redis.Redis:
    """A client for `url`; the password is the URL's, else REDIS_PASSWORD's."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **extra}
    if os.environ.get("REDIS_PASSWORD"):
        kwargs["password"] = os.environ["REDIS_PASSWORD"]  # the URL's own password, if any, wins
    return redis.Redis.from_url(url, decode_responses=True, **kwargs)


def keys(prefix: str) -> tuple[str, str, str]:
    """The hash, the epoch key and the channel under `prefix`."""
    return f"{prefix}kills", f"{prefix}kills:epoch", f"{prefix}kills:events"


def read_kills(client: redis.Redis, prefix: str) -> tuple[str | None, dict[Key, StoredKill]]:
    """The epoch and the entries, read at one instant; fields pep did not write are skipped."""
    hash_key, epoch_key, _ = keys(prefix)
    pipe = client.pipeline(transaction=True)
    pipe.get(epoch_key)
    pipe.hgetall(hash_key)
    epoch, raw = pipe.execute()
    entries: dict[Key, StoredKill] = {}
    for field, value in raw.items():
        kind, sep, id_ = field.partition(":")
        try:
            if not sep:
                raise ValueError("no kind:id")
            entry = StoredKill.from_fields(kind, id_, json.loads(value))
        except ValueError as e:  # JSONDecodeError is a ValueError
            log.warning("state: skipping %s field %r: %s", hash_key, field[:100], e)
            continue
        entries[entry.key] = entry
    return epoch, entries


# KEYS[1] the hash; ARGV field, value, before. Writes a revocation unless the one there has a `before`
# at least as late (atomic, so two operators revoking at once never move a time back). 1 when written.
_PUT_LATER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, held = pcall(cjson.decode, cur)
  if ok and type(held) == 'table' and tonumber(held['before']) and tonumber(held['before']) >= tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _put_later(client: redis.Redis, hash_key: str, entry: StoredKill) -> bool:
    field, value = f"{entry.kind}:{entry.id}", json.dumps(entry.fields())
    return bool(client.eval(_PUT_LATER, 1, hash_key, field, value, repr(entry.before)))


def write_kill(client: redis.Redis, prefix: str, entry: StoredKill, replace: bool = False) -> bool:
    """Add `entry` unless one with its key is there (True when added), and tell the fleet;
    `replace` (a revocation with a `before`): also over one there with an earlier `before`."""
    hash_key, _, channel = keys(prefix)
    if replace and entry.before is not None:
        added = _put_later(client, hash_key, entry)
    else:
        added = bool(client.hsetnx(hash_key, f"{entry.kind}:{entry.id}", json.dumps(entry.fields())))
    client.publish(channel, json.dumps({"action": "disable", "kind": entry.kind, "id": entry.id}))
    return added


def delete_kill(client: redis.Redis, prefix: str, kind: str, id_: str) -> bool:
    hash_key, _, channel = keys(prefix)
    removed = bool(client.hdel(hash_key, f"{kind}:{id_}"))
    client.publish(channel, json.dumps({"action": "enable", "kind": kind, "id": id_}))
    return removed


class RedisKills(KillStore):
    scope = "fleet"

    def __init__(self, url: str, prefix: str, metrics: Metrics) -> None:
        super().__init__(metrics)
        metrics.shared_state()
        self._client = connect(url)
        self._prefix = prefix
        self._epoch: str | None = None
        # Local changes since Redis last answered, replayed in order when it does.
        self._pending: list[tuple[str, StoredKill]] = []
        self._up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pep-state", daemon=True)

    def start(self) -> None:
        """One sync before serving (a replica started after a flip denies from its first decision)."""
        try:
            self._sync()
        except ERRORS as e:
            self._failed("connect", e)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=CALL_TIMEOUT_SECONDS + 1)
        self._client.close()

    def put(self, entry: StoredKill, replace: bool = False) -> bool:
        with self._lock:
            if entry.key in self._entries and not replace:
                return False
            try:
                if not write_kill(self._client, self._prefix, entry, replace):
                    # Already in force fleet-wide (a flip this replica has not heard of yet).
                    self._sync_now()
                    return False
            except ERRORS as e:
                self._failed("write", e)
                self._pending.append(("disable", entry))
            self._set({**self._entries, entry.key: entry}, remote=False)
            return True

    def delete(self, kind: str, id_: str) -> bool:
        with self._lock:
            held = (kind, id_) in self._entries
            try:
                removed = delete_kill(self._client, self._prefix, kind, id_)
            except ERRORS as e:
                self._failed("write", e)
                if held:
                    self._pending.append(("enable", self._entries[(kind, id_)]))
                removed = False
            self._set({k: e for k, e in self._entries.items() if k != (kind, id_)}, remote=False)
            return removed or held

    def _run(self) -> None:
        _, _, channel = keys(self._prefix)
        while not self._stop.is_set():
            op = "subscribe"
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                op = "sync"
                self._sync()  # after subscribing: no flip falls between the two
                due = time.monotonic() + RESYNC_SECONDS
                while not self._stop.is_set():
                    op = "subscribe"
                    message = pubsub.get_message(timeout=POLL_SECONDS)
                    op = "sync"
                    if message is not None or time.monotonic() >= due:
                        self._sync()
                        due = time.monotonic() + RESYNC_SECONDS
            except ERRORS as e:
                self._failed(op, e)
                self._stop.wait(RETRY_SECONDS)
            finally:
                try:
                    pubsub.close()
                except ERRORS:
                    pass

    def _sync(self) -> None:
        with self._lock:
            self._sync_now()

    def _sync_now(self) -> None:
        """Write back and replay what Redis lacks, then take Redis's entries (lock held)."""
        epoch, entries = read_kills(self._client, self._prefix)
        _, epoch_key, channel = keys(self._prefix)
        wrote = False
        if epoch is None or epoch != self._epoch:
            # Redis came back empty (or another replica reseeded it): it gets every entry held here.
            for entry in self._entries.values():
                if entry.key not in entries:
                    wrote |= bool(self._client.hsetnx(keys(self._prefix)[0], f"{entry.kind}:{entry.id}", _json(entry)))
            if epoch is None:
                self._client.set(epoch_key, uuid.uuid4().hex, nx=True)
        for action, entry in self._pending:
            if action == "disable" and entry.before is not None:  # a revocation: the later time wins
                wrote |= _put_later(self._client, keys(self._prefix)[0], entry)
            elif action == "disable":
                wrote |= bool(self._client.hsetnx(keys(self._prefix)[0], f"{entry.kind}:{entry.id}", _json(entry)))
            else:
                wrote |= bool(self._client.hdel(keys(self._prefix)[0], f"{entry.kind}:{entry.id}"))
        self._pending.clear()
        if wrote or epoch is None:
            epoch, entries = read_kills(self._client, self._prefix)
            self._client.publish(channel, json.dumps({"action": "resync"}))
            if wrote:
                log.warning("state: wrote back kill-switch entries Redis did not hold")
        self._epoch = epoch
        self._set(entries, remote=True)
        if not self._up:
            self._up = True
            self._metrics.state_up.set(1)
            log.info("state: Redis answers; %d fleet kill-switch entries", len(entries))

    def _failed(self, op: str, error: BaseException) -> None:
        self._metrics.state_errors.labels(op).inc()
        if self._up or op == "connect":
            log.error("state: Redis %s failed (%s): serving the last known kill list", op, type(error).__name__)
        self._up = False
        self._metrics.state_up.set(0)


def _json(entry: StoredKill) -> str:
    return json.dumps(entry.fields())
