"""Guard an agent's tools with pep: a tool runs only when pep allows the call.

Run it against the example policies:

    make run                                   # terminal 1: pep on 127.0.0.1:50051
    .venv/bin/python examples/guarded_tools.py # terminal 2

PEP_ADDRESS (default 127.0.0.1:50051) and PEP_DEV_DIR (default .pep/dev, where `make run`
keeps the development signing key) point it elsewhere. The token is a development token
for user alice, delegated to the agent `assistant`; in production it is the agent's own
access token, handed to `use_credentials` (or `credentials=`) as it arrives.
"""

from __future__ import annotations

import asyncio
import os

from pep.dev import tokens as devtoken
from pep.client import AsyncAuthorizer, Authorizer, Denied, use_credentials

ADDRESS = os.environ.get("PEP_ADDRESS", "127.0.0.1:50051")
DEV_DIR = os.environ.get("PEP_DEV_DIR", ".pep/dev")

pep = Authorizer(ADDRESS, timeout=1.0)  # one per process; its channel is reused


@pep.guard("read_file", resource=lambda path: ("File", path))
def read_file(path: str) -> str:
    return f"<contents of {path}>"


def agent_token() -> str:
    key_path, _ = devtoken.ensure_dev_keys(DEV_DIR)
    return devtoken.mint_token(
        key_path,
        issuer="https://dev.pep.local",
        audience="pep",
        sub="alice",
        act_chain=("assistant",),
        scopes=("files:read",),
    )


def try_tool(path: str) -> None:
    try:
        print(f"read_file({path}): {read_file(path)}")
    except Denied as e:
        d = e.decision
        print(f"read_file({path}): denied ({d.reason}, decision {d.decision_id or '-'}, gRPC {d.status.name})")


async def async_tools(token: str) -> None:
    async with AsyncAuthorizer(ADDRESS, timeout=1.0) as apep:

        @apep.guard("read_file", resource=lambda path: ("File", path), credentials=token)
        async def fetch(path: str) -> str:
            return f"<contents of {path}>"

        for path in ("company/handbook.pdf", "engineering/design-doc.md"):
            try:
                print(f"async fetch({path}): {await fetch(path)}")
            except Denied as e:
                print(f"async fetch({path}): denied ({e.decision.reason})")


def main() -> None:
    token = agent_token()
    with use_credentials(token):
        try_tool("finance/reports/q3-forecast.xlsx")  # alice owns it: allowed
        try_tool("engineering/design-doc.md")  # bob's, not shared with alice: denied
    asyncio.run(async_tools(token))
    # Fail closed: with no pep to ask, every tool call is denied.
    with Authorizer("127.0.0.1:1", timeout=0.2) as nowhere, use_credentials(token):
        guarded = nowhere.guard("read_file", resource=("File", "company/handbook.pdf"))(lambda: "never printed")
        try:
            guarded()
        except Denied as e:
            print(f"pep unreachable: denied ({e.decision.reason}, gRPC {e.decision.status.name})")
    pep.close()


if __name__ == "__main__":
    main()
