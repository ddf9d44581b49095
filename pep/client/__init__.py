"""Ask a pep sidecar from Python, and fail closed.

```python
from pep.client import Authorizer, Denied

pep = Authorizer("unix:///run/pep/pep.sock")        # one per process: the channel is reused

decision = pep.authorize(token, "read_file", ("File", "company/handbook.pdf"))
if decision.allowed: ...

@pep.guard("read_file", resource=lambda path: ("File", path), credentials=lambda: current_token())
def read_file(path: str) -> bytes: ...              # raises Denied, and never runs, on a deny

with pep.enforce(token, "pay", ("Account", "ops-usd"), context={"amount": 120}):
    make_payment()
```

Semantics, the same for `Authorizer` (threads) and `AsyncAuthorizer` (asyncio):

- **Fail closed.** Every gRPC error (pep unreachable, deadline exceeded, INVALID_ARGUMENT,
  ...) becomes a deny `Decision` whose `status` carries the gRPC status code and `detail`
  its message; nothing raises out of `authorize`. Its `reason` is `invalid_request` when pep
  refused the request as malformed, `policy_unavailable` when pep answered that it has no
  policy set, and `internal_error` otherwise (pep unreachable, a deadline, any other status).
- **Deadlines.** Each call has a total budget (`timeout`, default 0.5 s) that covers every
  attempt.
- **Retries only where safe.** Only UNAVAILABLE is retried, within the budget: either the
  call never reached pep (connection refused, sidecar restarting) or pep answered that it
  has no policy loaded, which it does before looking at the token, so no decision was
  made and nothing (rate-limit tokens, DPoP `jti`s) was spent. A decision, a deadline and
  every other status are never retried. (If the connection breaks after pep received the
  call, a retried DPoP proof is refused as a replay: the worst case is a deny.)
- **Connection reuse.** One gRPC channel per client, shared by all threads or tasks, with
  short reconnect backoff for a local sidecar.
"""

from pep.client._aio import AsyncAuthorizer
from pep.client._common import (
    Credentials,
    Decision,
    Denied,
    Resource,
    use_credentials,
)
from pep.client._sync import Authorizer
from pep.client.interceptor import AuthorizationInterceptor

__all__ = [
    "AsyncAuthorizer",
    "AuthorizationInterceptor",
    "Authorizer",
    "Credentials",
    "Decision",
    "Denied",
    "Resource",
    "use_credentials",
]
