"""Required mode's group commit and the hash chain, on the real writer and file sink."""

from __future__ import annotations

import json
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pep.audit.chain import GENESIS, line_hash, verify
from pep.audit.log import DecisionLog
from pep.audit.sinks import FileSink
from pep.config import DecisionLogConfig
from pep.decision import Decision, TokenSummary
from pep.metrics import Metrics
from pep.reasons import Reason


def _decision(n: int, allowed: bool = True) -> Decision:
    reason = Reason.ALLOWED if allowed else Reason.POLICY_NO_PERMIT
    return Decision(f"d{n}", allowed, reason, allowed, action="read", token=TokenSummary(iss="i"), ts=1.0)


class CountingSink(FileSink):
    """The real file sink, counting its write rounds and fsyncs."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.writes = self.syncs = 0

    def write(self, lines: deque[bytes]) -> None:
        self.writes += 1
        super().write(lines)

    def sync(self) -> None:
        self.syncs += 1
        super().sync()


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["decision_id"] for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("sync", ["write", "fsync"])
def test_an_allow_is_acknowledged_only_once_its_line_is_in_the_file(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "d.log"
    dlog = DecisionLog(DecisionLogConfig(sink=str(path), required=True, sync=sync), Metrics(process=False))
    for n in range(20):
        assert dlog.submit(_decision(n)).wait()
        assert _ids(path)[-1] == f"d{n}"  # on the file when the wait returned, not later
    dlog.close()


def test_concurrent_allows_share_writes(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    sink = CountingSink(str(path))
    cfg = DecisionLogConfig(sink=str(path), required=True, sync="fsync")
    dlog = DecisionLog(cfg, Metrics(process=False), sink=sink)
    with ThreadPoolExecutor(16) as pool:
        acks = list(pool.map(lambda n: dlog.submit(_decision(n)).wait(), range(2000)))
    dlog.close()
    assert all(acks)
    assert sorted(_ids(path)) == sorted(f"d{n}" for n in range(2000))
    assert sink.writes < 2000 and sink.syncs == sink.writes  # one write and one fsync per group


def test_a_deny_does_not_wait_and_an_allow_is_refused_when_the_sink_fails(tmp_path: Path) -> None:
    class Failing(FileSink):
        def write(self, lines: deque[bytes]) -> None:
            raise OSError(28, "No space left on device")

    path = tmp_path / "d.log"
    dlog = DecisionLog(
        DecisionLogConfig(sink=str(path), required=True), Metrics(process=False), sink=Failing(str(path))
    )
    assert dlog.submit(_decision(0, allowed=False)).wait()  # queued: a deny is answered at once
    assert not dlog.submit(_decision(1)).wait()  # never written: the allow is refused
    dlog.close(timeout=0.2)


def test_default_mode_acknowledges_when_queued(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    dlog = DecisionLog(DecisionLogConfig(sink=str(path)), Metrics(process=False))
    assert dlog.submit(_decision(0)).wait()
    dlog.close()
    assert _ids(path) == ["d0"]


# --- the chain ---------------------------------------------------------------------------


def _chained(path: Path, **kw: object) -> DecisionLog:
    return DecisionLog(DecisionLogConfig(sink=str(path), chain=True, **kw), Metrics(process=False))  # type: ignore[arg-type]


def test_every_line_admin_events_included_is_chained(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    dlog = _chained(path)
    dlog.record(_decision(0))
    dlog.write_event({"schema": 1, "ts": "2026-12-02T00:00:00Z", "event": "admin", "action": "disable"})
    dlog.record(_decision(1, allowed=False))
    dlog.close()
    lines = path.read_bytes().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == line_hash(lines[0]) and entries[2]["prev"] == line_hash(lines[1])
    assert entries[1]["event"] == "admin"
    assert verify([str(path)]).intact


def test_the_chain_continues_across_restarts_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    for run in range(3):  # three processes' lifetimes, one after the other
        dlog = _chained(path, max_bytes=6000, backups=50)
        for n in range(30):
            dlog.record(_decision(run * 100 + n))
        dlog.close()
    files = [str(p) for p in tmp_path.glob("d.log*")]
    assert len(files) > 2  # rotated
    verdict = verify(files)
    assert verdict.intact, verdict.text()
    assert (verdict.entries, verdict.first_seq, verdict.last_seq) == (90, 1, 90)


def test_a_restart_right_after_rotation_continues_from_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    dlog = _chained(path, backups=2)
    for n in range(5):
        dlog.record(_decision(n))
    dlog.close()
    path.rename(tmp_path / "d.log.1")  # as if rotated just before the restart
    dlog = _chained(path, backups=2)
    dlog.record(_decision(9))
    dlog.close()
    assert json.loads(path.read_bytes())["seq"] == 6
    assert verify([str(path), str(tmp_path / "d.log.1")]).intact


def test_chained_entries_written_concurrently_stay_in_order(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    dlog = _chained(path, required=True)
    barrier = threading.Barrier(8)

    def burst(k: int) -> None:
        barrier.wait()
        for n in range(100):
            assert dlog.submit(_decision(k * 1000 + n)).wait()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(burst, range(8)))
    dlog.close()
    verdict = verify([str(path)])
    assert verdict.intact and verdict.entries == 800


def test_an_allow_refused_after_waiting_is_never_logged_as_answered_allow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pep.audit.log as log_module

    monkeypatch.setattr(log_module, "WRITE_WAIT_SECONDS", 0.3)
    gate = threading.Event()

    class Stalled(FileSink):
        def write(self, lines: deque[bytes]) -> None:
            gate.wait(30)  # a disk that stalls, then recovers
            super().write(lines)

    path = tmp_path / "d.log"
    dlog = DecisionLog(
        DecisionLogConfig(sink=str(path), required=True), Metrics(process=False), sink=Stalled(str(path))
    )
    with ThreadPoolExecutor(4) as pool:
        acks = list(pool.map(lambda n: dlog.submit(_decision(n)).wait(), range(4)))
    assert acks == [False] * 4  # none was written in time: every one refused
    gate.set()
    assert dlog.submit(_decision(9)).wait()
    dlog.close()
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    corrected = {i for e in lines if e.get("event") == "answered" for i in e["decision_ids"]}
    for n in range(4):
        (entry,) = [e for e in lines if e.get("decision_id") == f"d{n}"]
        # Written as refused, or written as judged and followed by the event that says it was refused.
        assert entry["reason"] == "internal_error" or f"d{n}" in corrected
    assert [e["decision"] for e in lines if e.get("decision_id") == "d9"] == ["allow"]
    assert "d9" not in corrected
