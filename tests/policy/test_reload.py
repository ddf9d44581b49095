"""Hot reload with the real watcher: in-place edits, git-sync symlink swaps, ConfigMap `..data` swaps."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pep.config import ReloadConfig
from pep.metrics import Metrics
from pep.policy.store import PolicyStore
from pep.policy.watcher import PolicyWatcher

PERMIT = "permit(principal, action, resource);\n"
FORBID = "forbid(principal, action, resource);\n"
BROKEN = "permit(principal, action, resource) when {\n"


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def watched() -> Iterator[Callable[[Path], PolicyStore]]:
    watchers: list[PolicyWatcher] = []

    def start(directory: Path) -> PolicyStore:
        store = PolicyStore(str(directory), Metrics(process=False), require_schema=False)  # schemaless estates
        store.load()
        watcher = PolicyWatcher(store, ReloadConfig(settle_seconds=0.05, poll_seconds=30))
        watcher.start()
        watchers.append(watcher)
        return store

    yield start
    for w in watchers:
        w.stop()


def version(store: PolicyStore) -> str | None:
    snap = store.current()
    return snap.version if snap else None


def test_in_place_edit_reloads(tmp_path: Path, watched: Callable[[Path], PolicyStore]) -> None:
    (tmp_path / "p.cedar").write_text(PERMIT)
    store = watched(tmp_path)
    v1 = version(store)
    (tmp_path / "p.cedar").write_text(FORBID)
    assert wait_until(lambda: version(store) not in (None, v1))
    assert store.current().policies["p.cedar:0"].effect == "forbid"


def test_invalid_change_keeps_the_last_good_set(tmp_path: Path, watched: Callable[[Path], PolicyStore]) -> None:
    (tmp_path / "p.cedar").write_text(PERMIT)
    store = watched(tmp_path)
    v1 = version(store)
    (tmp_path / "p.cedar").write_text(BROKEN)
    assert wait_until(lambda: store.last_error is not None)
    assert version(store) == v1
    assert "p.cedar:1:1" in str(store.last_error)
    (tmp_path / "p.cedar").write_text(FORBID)
    assert wait_until(lambda: version(store) not in (None, v1))
    assert store.last_error is None


def test_start_with_invalid_directory_then_fix(tmp_path: Path, watched: Callable[[Path], PolicyStore]) -> None:
    (tmp_path / "p.cedar").write_text(BROKEN)
    store = watched(tmp_path)
    assert store.current() is None
    (tmp_path / "p.cedar").write_text(PERMIT)
    assert wait_until(lambda: store.current() is not None)


def test_git_sync_symlink_swap(tmp_path: Path, watched: Callable[[Path], PolicyStore]) -> None:
    # git-sync: `policies` is a symlink to a worktree; a sync swaps it atomically.
    rev1, rev2 = tmp_path / "rev1", tmp_path / "rev2"
    rev1.mkdir()
    (rev1 / "p.cedar").write_text(PERMIT)
    link = tmp_path / "policies"
    link.symlink_to(rev1)
    store = watched(link)
    v1 = version(store)
    rev2.mkdir()
    (rev2 / "p.cedar").write_text(FORBID)
    tmp_link = tmp_path / "policies.tmp"
    tmp_link.symlink_to(rev2)
    os.replace(tmp_link, link)
    assert wait_until(lambda: version(store) not in (None, v1))
    v2 = version(store)
    # A second swap is seen too: the watch follows the new target.
    shutil.rmtree(rev1)
    rev3 = tmp_path / "rev3"
    rev3.mkdir()
    (rev3 / "p.cedar").write_text(PERMIT + FORBID)
    tmp_link.symlink_to(rev3)
    os.replace(tmp_link, link)
    assert wait_until(lambda: version(store) not in (None, v1, v2))
    assert store.current().policy_count == 2


def test_configmap_data_swap_and_no_double_load(tmp_path: Path, watched: Callable[[Path], PolicyStore]) -> None:
    # A ConfigMap mount: visible names link into `..data`, itself a link to a timestamped folder.
    mount = tmp_path / "mount"
    mount.mkdir()
    ts1 = mount / "..2026_11_28_10_00_00.1"
    ts1.mkdir()
    (ts1 / "p.cedar").write_text(PERMIT)
    (mount / "..data").symlink_to(ts1.name)
    (mount / "p.cedar").symlink_to("..data/p.cedar")
    store = watched(mount)
    assert store.current().policy_count == 1  # ..data and the timestamped folder are not loaded again
    v1 = version(store)
    ts2 = mount / "..2026_11_28_10_05_00.2"
    ts2.mkdir()
    (ts2 / "p.cedar").write_text(FORBID)
    (mount / "..data_tmp").symlink_to(ts2.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(ts1)
    assert wait_until(lambda: version(store) not in (None, v1))
    assert store.current().policies["p.cedar:0"].effect == "forbid"


def test_periodic_check_catches_a_missed_event(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(PERMIT)
    store = PolicyStore(str(tmp_path), Metrics(process=False), require_schema=False)
    store.load()
    watcher = PolicyWatcher(store, ReloadConfig(watch=False, poll_seconds=0.1))
    watcher.start()
    try:
        v1 = version(store)
        (tmp_path / "p.cedar").write_text(FORBID)
        assert wait_until(lambda: version(store) not in (None, v1))
    finally:
        watcher.stop()
