"""A real Redis for tests/state (tests/harness/redis.py), skipped with a message where it is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.harness.redis import RedisServer


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_binary(), tmp_path_factory.mktemp("redis-auth"), password="s3cret-pw")
    server.start()
    try:
        yield server
    finally:
        server.stop()
