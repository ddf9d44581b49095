"""`pep test --coverage`, `--min-coverage N` and `--junit FILE`: what a suite run reports besides its cases."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence

from pep.cli import inputs
from pep.cli.common import EXIT_FAILED, EXIT_OK
from pep.cli.inputs import UsageError
from pep.dev.suite import CaseResult
from pep.errors import PolicyLoadError
from pep.policy.snapshot import Snapshot


def add_arguments(ts: argparse.ArgumentParser) -> None:
    ts.add_argument(
        "--coverage",
        action="store_true",
        help="after the results, how many cases each live policy and template determined, "
        "the policies no case reaches, and the share covered",
    )
    ts.add_argument(
        "--min-coverage",
        type=inputs.bounded_int(0, 100, "percent"),
        metavar="N",
        help="exit 1 when fewer than N percent (0 to 100) of the policies and templates are determined "
        "by some case; implies --coverage",
    )
    ts.add_argument(
        "--junit",
        type=inputs.name,
        metavar="FILE",
        help="also write the results as JUnit XML to FILE (one testsuite per suite file), for CI systems",
    )


class Reports:
    """Times each case as it runs; writes the JUnit file and the coverage once the run ends."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.junit: str | None = getattr(args, "junit", None)
        self.min_coverage: int | None = getattr(args, "min_coverage", None)
        self.coverage = bool(getattr(args, "coverage", False)) or self.min_coverage is not None
        self.directory: str = args.dir
        self.times: dict[int, float] = {}
        if self.junit is not None:
            inputs.utf8(self.junit, "--junit")
            parent = os.path.dirname(os.path.abspath(self.junit))
            if os.path.isdir(self.junit):
                raise UsageError(f"--junit {self.junit}: is a directory")
            if not os.path.isdir(parent):
                raise UsageError(f"--junit {self.junit}: no such directory {parent}")

    def timed(self, results: Iterable[CaseResult]) -> Iterator[CaseResult]:
        start = time.perf_counter()
        for i, result in enumerate(results):
            now = time.perf_counter()
            self.times[i] = now - start
            start = now
            yield result

    def broken(self, results: Sequence[CaseResult], error: PolicyLoadError) -> None:
        """A suite file that did not load: recorded in the JUnit file as an error."""
        if self.junit is None:
            return
        found: dict[str, list[str]] = {}
        for problem in error.problems:
            found.setdefault(problem.path, []).append(str(problem))
        self._write(results, {path: "\n".join(lines) for path, lines in found.items()})

    def finish(self, snapshot: Snapshot, results: Sequence[CaseResult]) -> int:
        """Write what was asked for; EXIT_FAILED when coverage is below --min-coverage."""
        if self.junit is not None:
            self._write(results, {})
        if not self.coverage:
            return EXIT_OK
        from pep.dev.coverage import coverage_of, percent_text

        report = coverage_of(snapshot, results)
        print(report.describe())
        if self.min_coverage is not None and report.percent < self.min_coverage:
            print(
                f"coverage {percent_text(report.percent)}% is below --min-coverage {self.min_coverage}%",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return EXIT_OK

    def _write(self, results: Sequence[CaseResult], broken: dict[str, str]) -> None:
        from pep.dev.junit import junit_xml, write_junit

        assert self.junit is not None
        try:
            write_junit(self.junit, junit_xml(results, self.times, broken, name=f"pep test {self.directory}"))
        except OSError as e:
            raise UsageError(f"--junit {self.junit}: {e.strerror or e}") from None
