"""Decision-log files as pep writes them, for `pep log query` and `pep log verify`: real `Decision`s
and admin events through a real `DecisionLog` and its file sink (rotation included)."""

from __future__ import annotations

import datetime as dt
import gzip
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pep.audit.entry import utc_timestamp
from pep.audit.log import DecisionLog
from pep.config import DecisionLogConfig
from pep.decision import Decision, TokenSummary
from pep.metrics import Metrics
from pep.reasons import Reason

# 2026-12-01T10:00:00Z: entry n of a test is stamped BASE + n seconds.
BASE = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC).timestamp()

Item = Decision | dict[str, Any]


def decision(
    n: int,
    *,
    agent: str = "assistant",
    user: str = "alice",
    action: str = "read_file",
    allowed: bool = True,
    reason: Reason | None = None,
    chain: tuple[str, ...] | None = None,
    resource: tuple[str, str] | None = None,
    at: float | None = None,
) -> Decision:
    """Decision number `n` (its id `d-n`, at BASE + n seconds unless `at`)."""
    return Decision(
        decision_id=f"d-{n:04d}",
        allowed=allowed,
        reason=reason or (Reason.ALLOWED if allowed else Reason.POLICY_FORBID),
        answer_allowed=allowed,
        policies=("files.read",) if allowed else (),
        policy_version="v1",
        agent=agent,
        on_behalf_of=user,
        delegation_chain=chain if chain is not None else (agent,),
        action=action,
        resource_type=resource[0] if resource else "File",
        resource_id=resource[1] if resource else f"reports/{n}.txt",
        request_id=f"req-{n}",
        token=TokenSummary(iss="https://idp.test", jti=f"jti-{n}", client_id=agent, scopes=("files:read",)),
        binding="bearer",
        ts=BASE + n if at is None else at,
        duration_us=100 + n,
    )


def admin_event(
    n: int, action: str = "disable", kind: str = "agent", id_: str = "assistant", reason: str = "incident 42"
) -> dict[str, Any]:
    """An admin event as the admin API writes it (pep/api/grpc_admin.py), at BASE + n seconds."""
    return {
        "schema": 1,
        "ts": utc_timestamp(BASE + n),
        "event": "admin",
        "action": action,
        "kind": kind,
        "id": "" if kind == "all" else id_,
        "reason": reason if action == "disable" else "",
        "actor": "oncall",
        "changed": True,
    }


def write_log(path: Path, items: Iterable[Item], **config: Any) -> list[bytes]:
    """Write `items` in order through a real DecisionLog to `path` (config: chain, max_bytes, backups...);
    the lines of `path` afterwards, newlines kept."""
    dlog = DecisionLog(DecisionLogConfig(sink=str(path), **config), Metrics(process=False))
    try:
        for item in items:
            taken = dlog.record(item) if isinstance(item, Decision) else dlog.write_event(item)
            assert taken
    finally:
        dlog.close()
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def rotated_log(root: Path, items: list[Item], per_file: int = 3, **config: Any) -> list[Path]:
    """`items` through a DecisionLog that rotates every `per_file` lines or so; `decisions.log.2` is
    then gzipped (as logrotate does). The files, oldest first."""
    probe = root / "probe.log"
    (line,) = write_log(probe, items[:1], **config)
    probe.unlink()
    size = len(line)
    path = root / "decisions.log"
    backups = 5
    write_log(path, items, max_bytes=per_file * size + size // 2, backups=backups, **config)
    files = [Path(f"{path}.{i}") for i in range(backups, 0, -1) if os.path.exists(f"{path}.{i}")] + [path]
    second = Path(f"{path}.2")
    if second in files:
        gz = Path(f"{second}.gz")
        with gzip.open(gz, "wb") as out:
            out.write(second.read_bytes())
        second.unlink()
        files[files.index(second)] = gz
    return files


def all_lines(files: Iterable[Path]) -> list[bytes]:
    """Every line of `files` in the order given (gzipped ones read through)."""
    out: list[bytes] = []
    for f in files:
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        out.extend(data.splitlines(keepends=True))
    return out
