"""Fixtures for the client tests: a scripted stand-in for pep and a port nothing listens on
(the real pep is the root conftest's `pep`)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from tests.harness.fake_pep import FakePep, Scripted, allow
from tests.harness.waits import free_port


@pytest.fixture
def fake() -> Iterator[FakePep]:
    servicer = Scripted([allow])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AuthorizerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield FakePep(f"127.0.0.1:{port}", servicer)
    server.stop(0)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    return free_port()
