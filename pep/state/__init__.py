"""State kept beyond one process: admin kill-switch flips in a local file (`state.file`) or
shared by the fleet in Redis (`state.redis_url`), and with Redis the rate-limit buckets and
the DPoP replay cache. The kill list is read from memory; buckets and proofs cost one Redis
call each, bounded by `state.timeout_ms`.

Imports `pep.config`, `pep.errors`, `pep.metrics` and `redis`, nothing above them.
"""

from __future__ import annotations

from pep.config import StateConfig
from pep.metrics import Metrics
from pep.state.kills import FileKills, KillStore, StoredKill
from pep.state.redis_kills import RedisKills
from pep.state.shared import Health, LocalReplay, SharedBuckets, SharedReplay, request_client

__all__ = [
    "FileKills",
    "KillStore",
    "RedisKills",
    "SharedBuckets",
    "SharedReplay",
    "StoredKill",
    "open_kill_store",
    "open_shared",
]


def open_kill_store(cfg: StateConfig, metrics: Metrics) -> KillStore | None:
    """The store the config asks for, loaded (Redis: first sync tried) and running; None: memory only."""
    if cfg.redis_url:
        store: KillStore = RedisKills(cfg.redis_url, cfg.key_prefix, metrics)
    elif cfg.file:
        store = FileKills(cfg.file, metrics)
    else:
        return None
    store.start()
    return store


def open_shared(
    cfg: StateConfig, metrics: Metrics, local_replay: LocalReplay
) -> tuple[SharedBuckets | None, SharedReplay | None]:
    """The fleet's rate-limit buckets and replay cache on one request-path client; (None, None) without Redis."""
    if not cfg.redis_url:
        return None, None
    client = request_client(cfg.redis_url, cfg.timeout_ms)
    health = Health(metrics)
    deny = cfg.on_unavailable == "deny"
    return SharedBuckets(client, cfg.key_prefix, health), SharedReplay(
        client, cfg.key_prefix, local_replay, health, deny=deny
    )
