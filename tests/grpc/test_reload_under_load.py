"""Reload under load: decisions keep flowing while the policy directory is rewritten.

For each real update style (in-place edits, git-sync symlink swaps, ConfigMap `..data`
swaps) the directory is rewritten 100 times with invalid versions mixed in, while a
client calls Authorize without pause. No call may fail, every response must carry a
version that was valid, and each valid change must be served within a second.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pep.policy.files import content_version
from tests.harness.estate import write_estate
from tests.harness.server import Harness, request

ROUNDS = 100
INVALID_EVERY = 10
VISIBLE_WITHIN = 1.0
BROKEN = "permit(principal, action, resource) when {\n"


class Client(threading.Thread):
    """Calls Authorize in a loop and remembers when each version was first served."""

    def __init__(self, h: Harness) -> None:
        super().__init__(daemon=True)
        self.h = h
        self.token = h.token(ttl_seconds=3600)
        self.first_seen: dict[str, float] = {}
        self.failures: list[str] = []
        self.calls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        req = request(self.token)
        while not self.stop.is_set():
            try:
                r = self.h.stub.Authorize(req, timeout=5)
            except grpc.RpcError as e:
                self.failures.append(f"{e.code()}: {e.details()}")
                continue
            self.calls += 1
            if r.reason != "allowed":
                self.failures.append(f"unexpected reason {r.reason}: {list(r.errors)}")
            self.first_seen.setdefault(r.policy_version, time.monotonic())


class InPlace:
    def __init__(self, root: Path) -> None:
        self.path = write_estate(root / "policies")

    def write(self, marker: str, valid: bool) -> None:
        text = BROKEN if not valid else f'// {marker}\npermit(principal, action == Action::"write", resource);\n'
        with open(self.path / "extra.cedar", "w") as f:
            f.write(text)


class GitSync:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "policies"
        self.current = write_estate(root / "rev-0")
        self.path.symlink_to(self.current)
        self.n = 0

    def write(self, marker: str, valid: bool) -> None:
        self.n += 1
        rev = self.root / f"rev-{self.n}"
        shutil.copytree(self.current, rev)
        (rev / "extra.cedar").write_text(BROKEN if not valid else f"// {marker}\n")
        tmp = self.root / "policies.tmp"
        tmp.symlink_to(rev)
        os.replace(tmp, self.path)
        old, self.current = self.current, rev
        if self.n > 2:
            shutil.rmtree(self.root / f"rev-{self.n - 2}", ignore_errors=True)
        del old


class ConfigMap:
    def __init__(self, root: Path) -> None:
        self.path = root / "mount"
        self.path.mkdir()
        self.n = 0
        first = write_estate(self.path / "..ts-0")
        (self.path / "..data").symlink_to(first.name)
        for name in os.listdir(first):
            (self.path / name).symlink_to(f"..data/{name}")
        (first / "extra.cedar").write_text("// initial\n")
        (self.path / "extra.cedar").symlink_to("..data/extra.cedar")

    def write(self, marker: str, valid: bool) -> None:
        self.n += 1
        ts = self.path / f"..ts-{self.n}"
        shutil.copytree(self.path / f"..ts-{self.n - 1}", ts)
        (ts / "extra.cedar").write_text(BROKEN if not valid else f"// {marker}\n")
        (self.path / "..data_tmp").symlink_to(ts.name)
        os.replace(self.path / "..data_tmp", self.path / "..data")
        if self.n > 2:
            shutil.rmtree(self.path / f"..ts-{self.n - 2}", ignore_errors=True)


def _failures(h: Harness) -> float:
    return h.server.metrics.reloads.labels("failure")._value.get()


@pytest.mark.parametrize("style", [InPlace, GitSync, ConfigMap], ids=["in-place", "git-sync", "configmap"])
def test_reload_under_load(
    harness_factory: Callable[..., Harness], tmp_path: Path, style: type, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = style(tmp_path)
    h = harness_factory(writer.path, reload={"settle_seconds": 0.05, "poll_seconds": 30})
    valid = {h.server.store.current().version}
    invalid: set[str] = set()
    client = Client(h)
    client.start()
    latencies = []
    try:
        for i in range(ROUNDS):
            ok = i % INVALID_EVERY != INVALID_EVERY - 1
            failures_before = _failures(h)
            written = time.monotonic()
            writer.write(f"round {i}", ok)
            version = content_version(str(writer.path))
            assert version is not None
            if not ok:
                invalid.add(version)
                deadline = time.monotonic() + VISIBLE_WITHIN * 3
                while _failures(h) == failures_before and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert _failures(h) > failures_before, f"round {i}: the invalid version was never rejected"
                continue
            valid.add(version)
            deadline = written + VISIBLE_WITHIN
            while version not in client.first_seen and time.monotonic() < deadline:
                time.sleep(0.002)
            assert version in client.first_seen, (
                f"round {i}: version {version} not served within {VISIBLE_WITHIN}s; "
                f"store has {h.server.store.current().version}, error {h.server.store.last_error}, "
                f"calls {client.calls}, failures {client.failures[:3]}"
            )
            latencies.append(client.first_seen[version] - written)
    finally:
        client.stop.set()
        client.join(5)
    assert client.failures == []
    served = set(client.first_seen)
    assert served <= valid, f"served versions that were never valid: {served - valid}"
    assert not served & invalid
    assert client.calls > ROUNDS
    with capsys.disabled():
        print(
            f"\n[reload {style.__name__}] {len(latencies)} valid changes, {client.calls} calls: "
            f"write-to-first-decision median {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms"
        )
