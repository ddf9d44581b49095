"""Fixtures for the ext_authz tests: a pep to ask through the Envoy API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pep._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from tests.harness.envoy import Ext
from tests.harness.server import Harness


@pytest.fixture
def ext_factory(harness_factory: Callable[..., Harness]) -> Callable[..., Ext]:
    def make(**overrides: Any) -> Ext:
        h = harness_factory(**overrides)
        return Ext(h, ea_grpc.AuthorizationStub(h.channel))

    return make


@pytest.fixture
def ext(ext_factory: Callable[..., Ext]) -> Ext:
    return ext_factory()
