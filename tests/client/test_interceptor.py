"""AuthorizationInterceptor: every inbound call of a gRPC service checked by a real pep."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from pep.client import AuthorizationInterceptor, Authorizer
from tests.harness.server import Harness

METHOD = "/docs.v1.Docs/Read"


def _identity(b: bytes) -> bytes:
    return b


def serve(authorizer: Authorizer, ran: list[bytes], **kw) -> tuple[grpc.Server, str]:
    def read(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append(request)
        return b"contents of " + request

    handlers = grpc.method_handlers_generic_handler(
        "docs.v1.Docs", {"Read": grpc.unary_unary_rpc_method_handler(read, _identity, _identity)}
    )
    interceptor = AuthorizationInterceptor(authorizer, **kw)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptor])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def docs(pep: Harness) -> Iterator[Callable[..., tuple[Callable[..., bytes], list[bytes]]]]:
    made: list[tuple[grpc.Server, grpc.Channel, Authorizer]] = []

    def make(target: str | None = None, **kw) -> tuple[Callable[..., bytes], list[bytes]]:
        ran: list[bytes] = []
        authorizer = Authorizer(target or pep.server.addresses[0], timeout=1)
        kw.setdefault("action", {METHOD: "read"})
        kw.setdefault("resource", lambda method, request: ("Doc", request.decode()))
        server, address = serve(authorizer, ran, **kw)
        channel = grpc.insecure_channel(address)
        made.append((server, channel, authorizer))
        call = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
        return call, ran

    yield make
    for server, channel, authorizer in made:
        channel.close()
        server.stop(0)
        authorizer.close()


def test_allowed_call_runs(pep: Harness, docs) -> None:
    call, ran = docs()
    assert call(b"plan", metadata=[("authorization", f"Bearer {pep.token()}")], timeout=5) == b"contents of plan"
    assert ran == [b"plan"]


def test_denied_call_is_refused_before_the_handler(pep: Harness, docs) -> None:
    call, ran = docs()
    with pytest.raises(grpc.RpcError) as e:
        call(b"keys", metadata=[("authorization", f"Bearer {pep.token()}")], timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    trailers = dict(e.value.trailing_metadata())
    assert trailers["x-pep-reason"] == "policy_forbid" and trailers["x-pep-decision-id"]
    assert ran == []


def test_missing_token_is_unauthenticated(docs) -> None:
    call, ran = docs()
    with pytest.raises(grpc.RpcError) as e:
        call(b"plan", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and ran == []


def test_unmapped_method_is_refused(pep: Harness, docs) -> None:
    call, ran = docs(action={})
    with pytest.raises(grpc.RpcError) as e:
        call(b"plan", metadata=[("authorization", f"Bearer {pep.token()}")], timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "no action" in e.value.details()
    assert ran == []


def test_pep_down_refuses_every_call(pep: Harness, docs) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    call, ran = docs(target=closed)
    with pytest.raises(grpc.RpcError) as e:
        call(b"plan", metadata=[("authorization", f"Bearer {pep.token()}")], timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and ran == []
