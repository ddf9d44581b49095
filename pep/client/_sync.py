"""The thread-safe pep client."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.client._common import (
    CHANNEL_OPTIONS,
    DEADLINE_PASSED,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    CredentialsLike,
    Decision,
    Denied,
    F,
    ResourceLike,
    decision_of,
    error_decision,
    prepare,
    resolve,
    rpc_error,
)


class Authorizer:
    """A thread-safe pep client. `target`: `host:port` or `unix:///path/pep.sock`."""

    def __init__(
        self,
        target: str = "unix:///run/pep/pep.sock",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        channel_credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self._own_channel = channel is None
        if channel is None:
            channel = (
                grpc.secure_channel(target, channel_credentials, options=CHANNEL_OPTIONS)
                if channel_credentials is not None
                else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
            )
        self._channel = channel
        self._stub = pb_grpc.AuthorizerStub(channel)

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> Authorizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorize(
        self,
        credentials: CredentialsLike,
        action: str,
        resource: ResourceLike,
        *,
        context: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Decision:
        """pep's decision; never raises: any failure is a deny carrying the gRPC status."""
        call = prepare(
            credentials,
            action,
            resource,
            context,
            request_id,
            self.timeout if timeout is None else timeout,
            self.retries,
        )
        if isinstance(call, Decision):
            return call
        while True:
            remaining = call.budget.remaining()
            if remaining <= 0:
                return DEADLINE_PASSED
            try:
                return decision_of(self._stub.Authorize(call.request, timeout=remaining, metadata=metadata or None))
            except grpc.RpcError as e:
                decision = rpc_error(e)
            except Exception as e:  # a client-side bug must still deny
                return error_decision(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            delay = call.budget.next_delay(decision)
            if delay is None:
                return decision
            time.sleep(delay)

    @contextlib.contextmanager
    def enforce(
        self, credentials: CredentialsLike, action: str, resource: ResourceLike, **kw: Any
    ) -> Iterator[Decision]:
        """Run the `with` body only when pep allows; otherwise raise `Denied` first."""
        decision = self.authorize(credentials, action, resource, **kw)
        if not decision.allowed:
            raise Denied(decision, action)
        yield decision

    def guard(
        self,
        action: str,
        resource: ResourceLike | Callable[..., ResourceLike],
        *,
        credentials: CredentialsLike | Callable[[], CredentialsLike] | None = None,
        context: Mapping[str, Any] | Callable[..., Mapping[str, Any] | None] | None = None,
    ) -> Callable[[F], F]:
        """Decorate a tool function: pep is asked before every call, and a deny raises
        `Denied` without running it. `resource` and `context` may be callables taking the
        tool's arguments; `credentials` defaults to `use_credentials(...)`."""

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__name__} is async: guard it with AsyncAuthorizer")

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                creds, res, ctx = resolve(credentials, resource, context, args, kwargs)
                if creds is None:
                    raise Denied(Decision(False, "token_missing"), action)
                with self.enforce(creds, action, res, context=ctx):
                    return fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate
