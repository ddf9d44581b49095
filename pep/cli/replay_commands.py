"""`pep replay`: what a policy directory would have decided about logged traffic (docs/audit.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pep.cli.common import EXIT_FAILED, EXIT_OK
from pep.cli.inputs import UsageError, directory, policy_snapshot, utf8


def add_parser(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="re-evaluate logged decisions against a policy directory and report what would change",
        description="Re-evaluate every decision in the decision logs that reached the policies against "
        "the policy directory DIR (principal, chain, user, action, resource, context and token times as "
        "logged; agents, entities, schema and policies from DIR) and report each one that would come out "
        "differently. Entries that never reached the policies, or cannot be rebuilt faithfully (logged "
        "before entries had inputs, inputs truncated or redacted), are skipped and counted by why. "
        "Exit 0 when no decision changes, 1 when some decision or reason changes, 2 on a usage error.",
    )
    r.add_argument("logs", nargs="+", metavar="LOG", help="decision log files (rotated and .gz ones too)")
    r.add_argument("--policies", "-p", required=True, metavar="DIR", help="the policy directory to replay against")
    r.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a summary and one line per change (default); json: one object",
    )
    r.set_defaults(func=cmd_replay, command="pep replay")


def cmd_replay(args: argparse.Namespace) -> int:
    root = directory(args.policies, "--policies")
    for path in args.logs:
        utf8(path, "LOG")
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a directory, not a log file")
        if not os.path.exists(path):
            raise UsageError(f"{path}: no such log file")
    from pep.audit.chain import order_files
    from pep.pipeline.replay import read_entries, replay

    snapshot = policy_snapshot(root)

    def warn(message: str) -> None:
        print(f"pep replay: warning: {message}", file=sys.stderr)

    try:
        result = replay(snapshot, read_entries(order_files(args.logs), warn))
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz
        raise UsageError(f"cannot read the log: {e}") from None
    if args.format == "json":
        print(json.dumps(result.as_json()))
    else:
        print(
            f"replayed {result.replayed} of {result.total} decisions against {root} "
            f"(policy version {snapshot.version}): {result.changed} changed"
            + (
                f", {len(result.changes) - result.changed} with other determining policies only"
                if result.changes
                else ""
            )
        )
        if result.skipped:
            reasons = ", ".join(f"{why} {n}" for why, n in sorted(result.skipped_reasons.items()))
            print(f"skipped {result.skipped}: {reasons}")
        for change in result.changes:
            kind = "changed " if change.decided else "policies"
            print(
                f"{kind} {change.ts} {change.decision_id} {change.agent or '-'} {change.action} "
                f"{change.resource_text}: {change.before.text()} -> {change.after.text()}"
            )
    return EXIT_FAILED if result.changed else EXIT_OK
