"""`pep validate`, `fmt`, `test`, `check` and `agents`: the policy author's commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pep.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pep.errors import PolicyLoadError


def cmd_agents(args: argparse.Namespace) -> int:
    import datetime as dt

    from pep.policy.files import AGENTS_FILE
    from pep.policy.registry import parse_registry
    from pep.policy.source import SourceProblemError, load_yaml

    path = os.path.join(args.dir, AGENTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            registry, problems = parse_registry(load_yaml(f.read(), AGENTS_FILE), AGENTS_FILE)
    except FileNotFoundError:
        print(f"pep agents: {path}: no agent registry", file=sys.stderr)
        return EXIT_USAGE
    except SourceProblemError as e:
        print(_prefixed(args.dir, str(e.problem)), file=sys.stderr)
        return EXIT_FAILED
    for problem in problems:
        print(f"warning: {_prefixed(args.dir, str(problem))}", file=sys.stderr)
    today = dt.datetime.now(dt.UTC).date()
    rows: list[dict[str, Any]] = []
    for rec in sorted(registry.agents.values(), key=lambda r: r.id):
        days = (rec.expires - today).days if rec.expires else None
        flags = []
        if not rec.owner:
            flags.append("no owner")
        if rec.status != "active":
            flags.append(rec.status)
        if days is not None and days < 0:
            flags.append("expired")
        elif days is not None and days <= args.soon:
            flags.append("expires soon")
        rows.append(
            {
                "id": rec.id,
                "owner": rec.owner,
                "status": rec.status,
                "expires": rec.expires.isoformat() if rec.expires else None,
                "days_to_expiry": days,
                "groups": list(rec.groups),
                "flags": flags,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = ("AGENT", "OWNER", "STATUS", "EXPIRES", "DAYS", "ATTENTION")
        table = [head] + [
            (
                r["id"],
                r["owner"] or "-",
                r["status"],
                r["expires"] or "-",
                "-" if r["days_to_expiry"] is None else str(r["days_to_expiry"]),
                ", ".join(r["flags"]),
            )
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        flagged = sum(1 for r in rows if r["flags"])
        print(f"{len(rows)} agents, {flagged} need attention")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from pep.policy.loader import load_snapshot

    try:
        snap = load_snapshot(args.dir)
    except PolicyLoadError as e:
        report(e, args.dir)
        print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"ok: {snap.policy_count} policies, {len(snap.registry)} agents, version {snap.version}"
        + ("" if snap.schema is not None else " (no schema: policies not validated)")
    )
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    from pep.policy.fmt import format_directory

    if not os.path.isdir(args.dir):
        print(f"pep fmt: {args.dir}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    results = format_directory(args.dir, write=not args.check)
    failed = False
    for r in results:
        if r.problem is not None:
            print(_prefixed(args.dir, str(r.problem)), file=sys.stderr)
            failed = True
        elif r.changed:
            print(f"{'would reformat' if args.check else 'formatted'} {os.path.join(args.dir, r.path)}")
            failed = failed or args.check
    changed = sum(1 for r in results if r.changed)
    print(f"{len(results)} file(s), {changed} {'to reformat' if args.check else 'reformatted'}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from pep.dev.suite import SuiteRunner

    try:
        runner = SuiteRunner(args.policies)
    except PolicyLoadError as e:
        report(e, args.policies)
        return EXIT_FAILED
    try:
        case: dict[str, Any] = {"action": args.action, "expect": "allow"}
        resource: Any = args.resource
        if args.attributes:
            from pep.dev.suite import parse_uid

            rtype, rid = parse_uid(args.resource, "--resource")
            resource = {"type": rtype, "id": rid, "attributes": json.loads(args.attributes)}
        case["resource"] = resource
        if args.context:
            case["context"] = json.loads(args.context)
        if args.principal:
            case["principal"] = args.principal
        else:
            case["token"] = json.loads(args.token_claims)
        result = runner.check(case)
        snapshot = runner.snapshot
    except (ValueError, json.JSONDecodeError) as e:
        print(f"pep check: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        runner.close()
    if result.decided == "error":
        print(f"pep check: {'; '.join(result.problems)}", file=sys.stderr)
        return EXIT_USAGE
    located = []
    for pid in result.policies:
        info = snapshot.policies.get(pid)
        located.append(
            {
                "id": pid,
                "source": f"{info.path}:{info.line}" if info else "",
                "effect": info.effect if info else "",
                "text": info.text if info else "",
            }
        )
    if args.json:
        print(
            json.dumps(
                {
                    "decision": result.decided,
                    "reason": result.reason,
                    "policies": located,
                    "errors": list(result.errors),
                    "policy_version": snapshot.version,
                },
                indent=2,
            )
        )
    else:
        print(f"decision: {result.decided}")
        print(f"reason:   {result.reason}")
        if located:
            print("determining policies:")
            for p in located:
                print(f"  {p['id']} ({p['effect']}) at {_prefixed(args.policies, p['source'])}")
                for line in p["text"].splitlines():
                    print(f"    | {line}")
        else:
            print(
                "determining policies: none" + (" (no permit matched)" if result.reason == "policy_no_permit" else "")
            )
        for err in result.errors:
            print(f"error:    {err}")
        print(f"policy version: {snapshot.version}")
    return EXIT_OK if result.decided == "allow" else EXIT_FAILED


def cmd_test(args: argparse.Namespace) -> int:
    from pep.dev.suite import SuiteRunner, summarize

    try:
        runner = SuiteRunner(args.dir)
    except PolicyLoadError as e:
        report(e, args.dir)
        return EXIT_FAILED
    results = []
    try:
        for result in runner.run(args.filter):
            results.append(result)
            if not result.passed:
                print(result.describe())
            elif args.verbose:
                print(f"ok   {result.suite}:{result.line}: {result.name}")
    except PolicyLoadError as e:
        report(e, args.dir)
        return EXIT_FAILED
    finally:
        runner.close()
    if not results:
        print(f"no test cases found in {os.path.join(args.dir, 'tests')}", file=sys.stderr)
        return EXIT_FAILED
    print(summarize(results))
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILED


def report(error: PolicyLoadError, directory: str) -> None:
    for problem in error.problems:
        print(_prefixed(directory, str(problem)), file=sys.stderr)


def _prefixed(directory: str, text: str) -> str:
    return text if os.path.isabs(text) else os.path.join(directory, text)
