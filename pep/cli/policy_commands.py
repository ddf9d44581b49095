"""`pep validate`, `fmt`, `test`, `check` and `agents`: the policy author's commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pep.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pep.cli.inputs import UsageError, directory, json_object
from pep.errors import PolicyLoadError


def cmd_agents(args: argparse.Namespace) -> int:
    if args.usage:
        from pep.cli.usage_commands import cmd_usage

        return cmd_usage(args)
    for flag in ("log", "since"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag} goes with --usage")
    import datetime as dt

    from pep.policy.files import AGENTS_FILE
    from pep.policy.registry import INVALID_STATUS, parse_registry
    from pep.policy.source import SourceProblemError, load_yaml

    path = os.path.join(directory(args.dir, "DIR"), AGENTS_FILE)
    if not os.path.lexists(path):
        print(f"pep agents: {path}: no agent registry", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = _read_source(path)
        registry, problems = parse_registry(load_yaml(text, AGENTS_FILE), AGENTS_FILE)
    except SourceProblemError as e:
        print(_prefixed(args.dir, str(e.problem)), file=sys.stderr)
        return EXIT_FAILED
    except _Unreadable as e:
        print(f"{path}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except RecursionError:
        print(f"{path}: nested too deeply to read", file=sys.stderr)
        return EXIT_FAILED
    # Each problem is an error (the directory does not load): printed, and flagged on its agent's row.
    by_line: dict[int, list[str]] = {}
    for problem in problems:
        print(_prefixed(args.dir, str(problem)), file=sys.stderr)
        message = problem.message.split(": ", 1)[-1]  # without its `agents[i] (id)` prefix
        by_line.setdefault(problem.line, []).append(f"error: {AGENTS_FILE}:{problem.line}: {message}")
    today = dt.datetime.now(dt.UTC).date()
    rows: list[dict[str, Any]] = []
    for rec in sorted(registry.agents.values(), key=lambda r: r.id):
        days = (rec.expires - today).days if rec.expires else None
        flags = list(dict.fromkeys(by_line.get(rec.line, [])))
        if not rec.owner:
            flags.append("no owner")
        if rec.status not in ("active", INVALID_STATUS):  # an invalid status is flagged by its error
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
                "scopes": None if rec.scopes is None else sorted(rec.scopes),
                "flags": flags,
            }
        )
    if args.json or args.format == "json":
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
    directory(args.dir, "DIR")
    from pep.policy.loader import load_snapshot

    try:
        snap = load_snapshot(args.dir)
    except PolicyLoadError as e:
        report(e, args.dir)
        print(f"{_count(len(e.problems), 'problem', 'problems')} found", file=sys.stderr)
        return EXIT_FAILED
    except RecursionError:
        print(f"{args.dir}: a file nests too deeply to read", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"ok: {_count(snap.policy_count, 'policy', 'policies')}, {_count(len(snap.registry), 'agent', 'agents')}, "
        f"version {snap.version}" + ("" if snap.schema is not None else " (no schema: policies not validated)")
    )
    if snap.schema is None:
        warn_schemaless(args.dir)
    return EXIT_OK


def warn_schemaless(root: str) -> None:
    """One stderr line: `pep serve` with the default `policies_require_schema: true` refuses this directory."""
    print(
        f"warning: {root}: no schema.cedarschema; pep serve refuses it unless policies_require_schema is false",
        file=sys.stderr,
    )


def cmd_fmt(args: argparse.Namespace) -> int:
    directory(args.dir, "DIR")
    from pep.policy.fmt import cedar_files, format_directory

    unreadable = []
    for rel in cedar_files(args.dir):  # read all first: fmt changes nothing in a directory it cannot read
        try:
            _read_source(os.path.join(args.dir, rel))
        except _Unreadable as e:
            unreadable.append(f"{os.path.join(args.dir, rel)}: {e}")
    if unreadable:
        print("\n".join(unreadable), file=sys.stderr)
        return EXIT_FAILED
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
    directory(args.policies, "--policies")
    from pep.dev.suite import SuiteRunner, parse_uid

    case: dict[str, Any] = {"action": args.action, "expect": "allow"}
    resource: Any = args.resource
    if args.attributes is not None:
        attributes = json_object(args.attributes, "--attributes")
        try:
            rtype, rid = parse_uid(args.resource, "--resource")
        except ValueError as e:
            raise UsageError(str(e)) from None
        resource = {"type": rtype, "id": rid, "attributes": attributes}
    case["resource"] = resource
    if args.context is not None:
        case["context"] = json_object(args.context, "--context")
    if args.principal is not None:
        case["principal"] = args.principal
    else:
        case["token"] = json_object(args.token_claims, "--token-claims")
    try:
        runner = SuiteRunner(args.policies)
    except PolicyLoadError as e:
        report(e, args.policies)
        return EXIT_FAILED
    try:
        result = runner.check(case)
        snapshot = runner.snapshot
    finally:
        runner.close()
    if result.decided == "error":
        raise UsageError("; ".join(result.problems))
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
    directory(args.dir, "DIR")
    from pep.cli.test_reports import Reports
    from pep.dev.suite import SuiteRunner, summarize

    reports = Reports(args)  # --coverage, --min-coverage, --junit
    try:
        runner = SuiteRunner(args.dir)
    except PolicyLoadError as e:
        report(e, args.dir)
        reports.broken([], e)
        return EXIT_FAILED
    if runner.snapshot.schema is None:
        warn_schemaless(args.dir)
    results = []
    try:
        for result in reports.timed(runner.run(args.filter)):
            results.append(result)
            if not result.passed:
                print(result.describe())
            elif args.verbose:
                print(f"ok   {result.suite}:{result.line}: {result.name}")
    except PolicyLoadError as e:
        report(e, args.dir)
        reports.broken(results, e)
        return EXIT_FAILED
    finally:
        runner.close()
    if not results:
        print(f"no test cases found in {os.path.join(args.dir, 'tests')}", file=sys.stderr)
        reports.finish(runner.snapshot, results)
        return EXIT_FAILED
    print(summarize(results))
    covered = reports.finish(runner.snapshot, results)
    return EXIT_OK if all(r.passed for r in results) and covered == EXIT_OK else EXIT_FAILED


def report(error: PolicyLoadError, root: str) -> None:
    for problem in error.problems:
        print(_prefixed(root, str(problem)), file=sys.stderr)


def _prefixed(root: str, text: str) -> str:
    return text if os.path.isabs(text) else os.path.join(root, text)


class _Unreadable(Exception):
    """A file of the directory that cannot be read as UTF-8 text: a problem in it (exit 1)."""


def _read_source(path: str) -> str:
    if os.path.isdir(path):
        raise _Unreadable("is a directory, not a file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _Unreadable(f"cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Unreadable(f"not UTF-8 (byte {e.start})") from None


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
