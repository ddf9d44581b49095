"""State kept beyond one process: admin kill-switch flips in a local file (`state.file`) or
shared by the fleet in Redis (`state.redis_url`). The request path only ever reads memory.

Imports `pep.config`, `pep.errors`, `pep.metrics` and `redis`, nothing above them.
"""

from __future__ import annotations

from pep.config import StateConfig
from pep.metrics import Metrics
from pep.state.kills import FileKills, KillStore, StoredKill
from pep.state.redis_kills import RedisKills

__all__ = ["FileKills", "KillStore", "RedisKills", "StoredKill", "open_kill_store"]


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
