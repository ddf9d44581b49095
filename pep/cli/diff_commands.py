"""`pep diff OLD NEW`: what changed between two policy directories, or a directory and a git revision of it."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
import tempfile
from contextlib import ExitStack
from typing import Any

from pep.cli.common import EXIT_FAILED, EXIT_OK
from pep.cli.inputs import UsageError, directory, utf8

GIT_PREFIX = "git:"
_GIT_TIMEOUT = 120.0


def add_parser(sub: Any) -> None:
    d = sub.add_parser(
        "diff",
        help="what changed between two policy directories (or a directory and a git revision)",
        description="Compare two policy directories: policies added, removed or changed by id (as Cedar "
        "JSON, so formatting and comments are no change), live and shadow; schema entity types, actions "
        "and common types added, removed or changed; agents added, removed or changed (status and other "
        "fields); template links; entities.json, limits.yaml and killswitch.yaml. Either side may be "
        "git:REV: that revision of the other side's directory, read from its git repository (both git:REV: "
        "the current directory). Exit 0 when they are the same, 1 when they differ, 2 on a usage error "
        "(a missing directory, an unknown revision, a side that does not parse).",
    )
    d.add_argument("old", metavar="OLD", help="the policy directory before, or git:REV")
    d.add_argument("new", metavar="NEW", help="the policy directory after, or git:REV")
    d.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one line per change (default); json: one object (docs/policy-directory.md)",
    )
    d.set_defaults(func=cmd_diff, command="pep diff")


def cmd_diff(args: argparse.Namespace) -> int:
    from pep.dev.diff import DiffError, compare, read_side, render

    old, new = utf8(args.old, "OLD"), utf8(args.new, "NEW")
    anchor = "."
    for side, what in ((old, "OLD"), (new, "NEW")):
        if not side.startswith(GIT_PREFIX):
            directory(side, what)
            anchor = side
    with ExitStack() as stack:
        paths = []
        for side, what in ((old, "OLD"), (new, "NEW")):
            if side.startswith(GIT_PREFIX):
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pep-diff-"))
                paths.append(export_revision(side[len(GIT_PREFIX) :], anchor, tmp, what))
            else:
                paths.append(side)
        sides = []
        for path, label in zip(paths, (old, new), strict=True):
            try:
                sides.append(read_side(path))
            except DiffError as e:
                raise UsageError(f"{label}: cannot compare: {e}") from None
    result = compare(sides[0], sides[1])
    if args.format == "json":
        print(json.dumps({"old": old, "new": new, **result}, indent=2))
    else:
        print(render(result))
    return EXIT_OK if result["same"] else EXIT_FAILED


def _git(args: list[str], cwd: str, what: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT, env=env, check=False)
    except FileNotFoundError:
        raise UsageError(f"{what}: git:REV needs git, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{what}: git did not answer within {_GIT_TIMEOUT:g} s") from None


def export_revision(rev: str, anchor: str, into: str, what: str) -> str:
    """`anchor`'s directory as it was at `rev` of its git repository, extracted under `into`; its path."""
    if not rev or rev.startswith("-") or any(c in rev for c in "\0\n\r") or len(rev) > 256:
        raise UsageError(f"{what} git:{rev}: not a revision")
    top_run = _git(["rev-parse", "--show-toplevel"], anchor, what)
    prefix_run = _git(["rev-parse", "--show-prefix"], anchor, what)
    if top_run.returncode or prefix_run.returncode:
        said = (top_run.stderr or prefix_run.stderr).decode("utf-8", "replace").strip().splitlines()
        why = f" ({said[0]})" if said and "not a git repository" not in said[0] else ""
        raise UsageError(f"{what} git:{rev}: {os.path.abspath(anchor)} is not in a git repository{why}")
    top = top_run.stdout.decode("utf-8", "replace").strip()
    prefix = prefix_run.stdout.decode("utf-8", "replace").strip()
    found = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], top, what)
    if found.returncode:
        raise UsageError(f"{what} git:{rev}: unknown revision")
    commit = found.stdout.decode().strip()
    if prefix and _git(["cat-file", "-e", f"{commit}:{prefix}"], top, what).returncode:
        raise UsageError(f"{what} git:{rev}: the revision has no {prefix.rstrip('/')}")
    archive = _git(["archive", "--format=tar", commit, *([prefix] if prefix else [])], top, what)
    if archive.returncode:
        lines = archive.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"{what} git:{rev}: git archive failed: {lines[0] if lines else archive.returncode}")
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise UsageError(f"{what} git:{rev}: cannot extract the revision: {e}") from None
    return os.path.join(into, prefix)
