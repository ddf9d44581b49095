"""The tamper-evident chain of the decision log (`decision_log.chain: true`).

Each line, decision or admin event, carries `seq` (1, 2, 3, ... continued across rotation and
restarts) and `prev`: the SHA-256, in lowercase hex, of the bytes of the line before it without
its newline (64 zeros for the first line a log ever had). Anyone can check a log without pep:
read the lines oldest first, and each line's `prev` must be the hash of the line before and its
`seq` one more than that line's. An edited line breaks the next line's `prev`; a removed,
inserted or moved line breaks `seq` or `prev` where it happened.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
_TAIL_BYTES = 1024 * 1024  # how far back from a file's end the writer looks for its last line


def line_hash(line: bytes) -> str:
    """The `prev` a line's successor carries: SHA-256 of the line without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class Chain:
    """The writer's side: seals entries in order. One writer thread owns it."""

    def __init__(self, seq: int = 0, prev: str = GENESIS) -> None:
        self.seq, self.prev = seq, prev

    def seal(self, entry: dict[str, Any], encode: Callable[[dict[str, Any]], bytes]) -> bytes:
        """The entry's line (newline included) with `seq` and `prev` set; the chain moves on."""
        entry["seq"], entry["prev"] = self.seq + 1, self.prev
        line = encode(entry)
        self.seq, self.prev = self.seq + 1, line_hash(line)
        return line


def resume(path: str, backups: int) -> Chain:
    """The chain continued from the last line already in `path` (or, when it is empty or missing,
    in `path.1`): a restart or a rotation never starts it again."""
    for candidate in (path, *([f"{path}.1"] if backups > 0 else [])):
        last = _last_line(candidate)
        if last is not None:
            return Chain(_seq_of(last), line_hash(last))
    return Chain()


def _last_line(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            if end == 0:
                return None
            f.seek(max(0, end - _TAIL_BYTES))
            tail = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError:
        return None  # a pipe or device: nothing to continue from
    lines = tail.rstrip(b"\n").split(b"\n")
    return lines[-1] if lines and lines[-1] else None


def _seq_of(line: bytes) -> int:
    """The last line's seq; 0 when it has none (the chain was off until now)."""
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return 0
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0


@dataclass(frozen=True)
class Verdict:
    intact: bool
    entries: int
    first_seq: int = 0
    last_seq: int = 0
    where: str = ""  # file:line of the first broken entry
    problem: str = ""

    def text(self) -> str:
        if self.intact:
            span = f" (seq {self.first_seq} to {self.last_seq})" if self.entries else ""
            return f"intact: {self.entries} entries{span}"  # the contract's wording, even for 1
        return f"broken at {self.where}: {self.problem} ({_entries(self.entries)} intact before it)"


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def read_lines(path: str) -> Iterator[bytes]:
    """A log file's lines, a gzipped rotated one too."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from f


def _first_seq(path: str) -> int:
    for line in read_lines(path):
        return _seq_of(line) or 0
    return 0


def order_files(paths: Iterable[str]) -> list[str]:
    """Oldest first, by each file's first seq: `pep.log pep.log.1 pep.log.2` in any order works."""
    return sorted(paths, key=_first_seq)


def verify(paths: Iterable[str]) -> Verdict:
    """Check the chain over `paths` (oldest first after ordering by their first seq)."""
    count = first = last = 0
    prev_hash: str | None = None
    prev_where = ""
    for path in order_files(paths):
        for number, line in enumerate(read_lines(path), 1):
            where = f"{path}:{number}"
            broken = _check(line, prev_hash, last, prev_where)
            if broken:
                this_line = broken[0]  # else the line before is the one at fault
                return Verdict(
                    False, count if this_line else count - 1, first, last, where if this_line else prev_where, broken[1]
                )
            seq = _seq_of(line)
            first, last = first or seq, seq
            count += 1
            prev_hash, prev_where = line_hash(line), where
    return Verdict(True, count, first, last)


def _check(line: bytes, prev_hash: str | None, last: int, prev_where: str) -> tuple[bool, str] | None:
    """None when the line continues the chain; else (whether this line, not the one before, is at
    fault, what is wrong)."""
    if not line.endswith(b"\n"):
        return True, "the line is cut short (no newline)"
    try:
        entry = json.loads(line)
    except ValueError:
        return True, "not a JSON entry"
    if not isinstance(entry, dict) or not isinstance(entry.get("prev"), str) or not _seq_of(line):
        return True, "no seq and prev: not a chained entry"
    seq, prev = entry["seq"], entry["prev"]
    if prev_hash is None:
        if seq == 1 and prev != GENESIS:
            return True, "the first entry's prev is not 64 zeros"
        return None  # the oldest line given: what came before it is not here to check
    if seq == last + 1 and prev == prev_hash:
        return None
    if seq == last + 1:
        # The seq runs on, so nothing was removed: the line before was changed (or this prev was).
        return False, "the entry was changed after it was written (the next line's prev does not match it)"
    if seq > last + 1:
        return True, f"seq jumps from {last} to {seq}: {_entries(seq - last - 1)} removed before this line"
    return True, f"seq {seq} after {last}: a line was inserted or moved here"
