"""`pep admin revoke` and `pep admin unrevoke`: revoke tokens now, through a pep's admin API or,
with `--state`, straight in the fleet's Redis (kill store kinds `revoked_token`, `revoked_agent`,
`revoked_user`, `revoked_issuer`, each with the time before which tokens are revoked)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from typing import Any

from pep.cli import inputs
from pep.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pep.cli.inputs import UsageError, clip
from pep.policy.revoked_file import REVOKE_KINDS, STORED_PREFIX, format_time, parse_time, revoke_kind

# `--before` may lie this far ahead of this machine's clock (skew), no further: the admin API's bound.
MAX_FUTURE_SECONDS = 300


def add_parsers(ad_sub: Any, actor_default: str) -> None:
    """`revoke` and `unrevoke` under `pep admin`."""
    kinds = ", ".join(REVOKE_KINDS)
    rv = ad_sub.add_parser(
        "revoke",
        help="revoke a token (jti), or every token issued before a time for an agent, user or issuer",
        description="Revoke now: `token JTI` one token; `agent ID`, `user ID`, `issuer URL` every token issued "
        "(iat) before --before (default: now), including tokens already verified and cached. Denied with "
        "token_revoked from the next decision until unrevoked; a later --before replaces an earlier one.",
    )
    rv.add_argument("kind", choices=REVOKE_KINDS, help=f"what to revoke: {kinds}")
    rv.add_argument("id", type=inputs.name, help="the jti, agent id, user id or issuer URL")
    rv.add_argument(
        "--before",
        metavar="TIME",
        help="RFC 3339 time with a zone, e.g. 2026-12-01T10:00:00Z (default: now; not for `token`)",
    )
    rv.add_argument("--reason", required=True, type=inputs.name, help="why; recorded in the decision log")
    rv.add_argument("--actor", default=actor_default, type=inputs.optional_name, help="who is asking (default $USER)")
    rv.set_defaults(func=cmd_revoke, admin_action="revoke", command="pep admin revoke")
    un = ad_sub.add_parser(
        "unrevoke",
        help="lift a revocation made through the admin API",
        description="Lift a revocation made with `pep admin revoke` (killswitch.yaml `revoked:` entries stay).",
    )
    un.add_argument("kind", choices=REVOKE_KINDS, help=f"what to lift: {kinds}")
    un.add_argument("id", type=inputs.name, help="the jti, agent id, user id or issuer URL")
    un.add_argument("--actor", default=actor_default, type=inputs.optional_name, help="who is asking (default $USER)")
    un.set_defaults(func=cmd_revoke, admin_action="unrevoke", command="pep admin unrevoke")


def _before(args: argparse.Namespace) -> float:
    now = time.time()
    text = getattr(args, "before", None)
    if text is None:
        return now
    if args.kind == "token":
        raise UsageError("--before goes with agent, user or issuer: a jti is revoked whenever it was issued")
    try:
        before = parse_time(text)
    except ValueError as e:
        raise UsageError(f"--before: {e}") from None
    if before > now + MAX_FUTURE_SECONDS:
        raise UsageError(f"--before {clip(text, 60)}: in the future (revoke what was issued up to now)")
    return before


def cmd_revoke(args: argparse.Namespace) -> int:
    before = _before(args) if args.admin_action == "revoke" else 0.0
    from pep.cli.runtime_commands import admin_address

    address = admin_address(args)
    if address is None:
        return _revoke_fleet(args, before)
    if not address:
        print("pep admin: the admin API is turned off in this config (admin_listen is empty)", file=sys.stderr)
        return EXIT_USAGE
    import grpc

    from pep._proto.pep.v1 import admin_pb2 as pb
    from pep._proto.pep.v1 import admin_pb2_grpc as pb_grpc
    from pep.api.grpc_admin import REVOKE_VALUES

    kind = REVOKE_VALUES[args.kind]
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AdminStub(channel)
        try:
            if args.admin_action == "revoke":
                req = pb.RevokeRequest(kind=kind, id=args.id, before=before, reason=args.reason, actor=args.actor)
                resp = stub.Revoke(req, timeout=args.timeout)
            else:
                resp = stub.Unrevoke(pb.UnrevokeRequest(kind=kind, id=args.id, actor=args.actor), timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"pep admin: {address}: {e.code().name}: {clip(e.details() or '')}", file=sys.stderr)
            return EXIT_FAILED
    print(_said(args, before, resp.changed, ""))
    print_revocations(resp.status.revocations)
    return EXIT_OK


def _said(args: argparse.Namespace, before: float, changed: bool, where: str) -> str:
    what = f"{args.kind} {args.id}"
    if args.admin_action == "unrevoke":
        return f"unrevoked {what}{where}" if changed else f"no change: {what} was not revoked{where}"
    when = "" if args.kind == "token" else f": tokens issued before {format_time(before)}"
    if changed:
        return f"revoked {what}{when}{where}"
    later = "" if args.kind == "token" else " up to that time or a later one"
    return f"no change: {what} was already revoked{later}{where}"


def _revoke_fleet(args: argparse.Namespace, before: float) -> int:
    """`pep admin --state URL revoke|unrevoke`: straight to the fleet's Redis, no pep in between."""
    from pep.config import check_redis_url
    from pep.config.redis_url import redact_redis_url
    from pep.state import StoredKill
    from pep.state.redis_kills import ERRORS, connect, delete_kill, read_kills, write_kill

    url = check_redis_url(args.state, "--state")
    prefix = "pep:" if args.key_prefix is None else args.key_prefix
    client = connect(url, timeout=args.timeout)
    kind = STORED_PREFIX + args.kind
    try:
        if args.admin_action == "unrevoke":
            changed = delete_kill(client, prefix, kind, args.id)
        else:
            entry = StoredKill(kind, args.id, args.reason, time.time(), args.actor, "admin", before)
            # A jti once; a time only over an earlier one (atomically, in Redis).
            changed = write_kill(client, prefix, entry, replace=args.kind != "token")
        _, entries = read_kills(client, prefix)
    except ERRORS as e:
        raise UsageError(f"Redis {redact_redis_url(url)}: {type(e).__name__}: {clip(str(e), 200)}") from None
    finally:
        client.close()
    print(_said(args, before, changed, " fleet-wide"))
    print_stored_revocations(entries.values())
    return EXIT_OK


def print_revocations(revocations: Iterable[Any]) -> None:
    """`pep admin status` lines for the admin API's revocations (pb.Revocation)."""
    from pep.api.grpc_admin import REVOKE_NAMES

    for r in revocations:
        kind = REVOKE_NAMES.get(r.kind, "?")
        since = f" since {format_time(r.since)}" if r.since else ""
        by = f" by {r.actor}" if r.actor else ""
        scope = f" [{r.scope}]" if r.scope else ""
        print(f"revoked {_what(kind, r.id, r.before)} ({r.source}{since}{by}): {r.reason}{scope}")


def print_stored_revocations(entries: Iterable[Any]) -> None:
    """`pep admin --state status` lines for the revocations in Redis (StoredKill)."""
    for e in sorted(entries, key=lambda k: (k.kind, k.id)):
        kind = revoke_kind(e.kind)
        if kind is None:
            continue
        by = f" by {e.actor}" if e.actor else ""
        before = e.before if e.before is not None else e.since
        print(f"revoked {_what(kind, e.id, before)} ({e.source}, fleet, since {format_time(e.since)}{by}): {e.reason}")


def _what(kind: str, id_: str, before: float) -> str:
    if kind == "token":
        return f"token {id_}"
    return f"{kind} {id_}: tokens issued before {format_time(before)}"
