"""`pep agents --usage` and `pep suggest`: least privilege from a decision log (docs/audit.md).

The work is `pep/pipeline/usage.py` and `pep/pipeline/suggest.py`; this module parses the flags,
reads the log (`pep/audit/reader.py`) and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from pep.cli import inputs
from pep.cli.common import EXIT_FAILED, EXIT_OK
from pep.cli.inputs import UsageError, clip, policy_snapshot
from pep.cli.log_commands import log_files, rfc3339_time

__all__ = ["add_parser", "add_usage_arguments", "cmd_suggest", "cmd_usage"]

_LOGS_HELP = "decision log files (rotated and .gz ones too), in any order"


def add_usage_arguments(ag: argparse.ArgumentParser) -> None:
    """`pep agents`' flags for the usage report."""
    ag.add_argument(
        "--usage",
        action="store_true",
        help="with --log: per agent, the actions and resource types policy could allow it, those it used "
        "(allowed decisions in the log) and the scopes it held but never needed (docs/audit.md)",
    )
    ag.add_argument("--log", nargs="+", metavar="LOG", help=f"with --usage: {_LOGS_HELP}")
    ag.add_argument(
        "--since", type=rfc3339_time, metavar="T", help="with --usage: only entries at or after T (RFC 3339)"
    )
    ag.add_argument(
        "--format",
        choices=("table", "json"),
        default=None,
        help="table (the default) or json; for the inventory, json is --json",
    )


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "suggest",
        help="Cedar policies that allow an agent exactly what it used in a decision log",
        description="Print Cedar policies granting AGENT what its allowed decisions in the logs used: one "
        'permit per action and resource type, scoped to principal == Agent::"AGENT", the resources, users '
        "and scopes those decisions had. With --policies, the scopes are only those it needed there, and a "
        "header names the policies the suggestion replaces. Exit 0 when something was suggested, 1 when "
        "the logs hold no allowed decision of the agent, 2 on a usage error.",
    )
    s.add_argument("--log", nargs="+", required=True, metavar="LOG", help=_LOGS_HELP)
    s.add_argument("--agent", required=True, type=inputs.name, help="the agent (the current actor, `agent`)")
    s.add_argument("--policies", "-p", metavar="DIR", help="the policy directory to judge scopes and grants against")
    s.add_argument("--since", type=rfc3339_time, metavar="T", help="only entries at or after T (RFC 3339)")
    s.set_defaults(func=cmd_suggest, command="pep suggest")


def _entries(args: argparse.Namespace) -> Iterator[Mapping[str, Any]]:
    from pep.audit.reader import Filter, query

    def warn(message: str) -> None:
        print(f"{args.command}: warning: {clip(message, 1000)}", file=sys.stderr)

    for record in query(log_files(args.log), Filter(since=args.since), warn):
        yield record.entry


def cmd_usage(args: argparse.Namespace) -> int:
    if not args.log:
        raise UsageError("--usage needs --log LOG...: the decision log to read")
    root = inputs.directory(args.dir, "DIR")
    paths = log_files(args.log)  # checked before the directory loads
    args.log = paths
    from pep.pipeline.usage import usage

    snapshot = policy_snapshot(root)
    found = usage(snapshot, _entries(args))
    if args.format == "json" or args.json:
        out = {"policies": root, "policy_version": snapshot.version, "agents": [u.as_json() for u in found]}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    grants = [["AGENT", "STATUS", "ACTION", "RESOURCE", "ALLOWED", "USED"]]
    scopes = [["AGENT", "SCOPE", "HELD", "NEEDED"]]
    for u in found:
        pairs = sorted(set(u.allowed or ()) | set(u.used))
        for action, rtype in pairs:
            allowed = "?" if u.allowed is None else ("yes" if (action, rtype) in u.allowed else "no")
            grants.append([u.agent, u.status, action, rtype, allowed, str(u.used.get((action, rtype), 0))])
        if not pairs:
            grants.append([u.agent, u.status, "-", "-", "?" if u.allowed is None else "-", "0"])
        for scope in sorted(u.held):
            scopes.append([u.agent, scope, str(u.held[scope]), "yes" if scope in u.needed else "no"])
    _table(grants)
    print()
    _table(scopes if len(scopes) > 1 else [*scopes, ["-", "-", "-", "-"]])
    never = sum(len(u.never_used) for u in found)
    unneeded = sum(len(u.not_needed) for u in found)
    unjudged = sum(u.unreplayable for u in found)
    print(
        f"{len(found)} agents: {never} allowed action and resource type pairs never used, "
        f"{unneeded} scopes held but never needed"
        + (f"; {unjudged} allowed decisions could not be replayed (their scopes count as needed)" if unjudged else "")
    )
    return EXIT_OK


def _table(rows: list[list[str]]) -> None:
    rows = [[clip(cell, 200) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_suggest(args: argparse.Namespace) -> int:
    paths = log_files(args.log)
    args.log = paths
    root = inputs.directory(args.policies, "--policies") if args.policies is not None else None
    from pep.pipeline.suggest import render, suggestions
    from pep.pipeline.usage import usage

    snapshot = policy_snapshot(root) if root is not None else None
    found = usage(snapshot, _entries(args), only=args.agent, keep=True)[0]
    if not found.entries:
        print(f"pep suggest: no allowed decision of agent {clip(args.agent, 200)!r} in the log", file=sys.stderr)
        return EXIT_FAILED
    policies = suggestions(args.agent, found, judged=snapshot is not None)
    print(render(args.agent, found, policies, snapshot), end="")
    return EXIT_OK
