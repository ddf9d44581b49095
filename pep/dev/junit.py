"""JUnit XML of a suite run (`pep test --junit FILE`), as GitHub and GitLab read it.

One <testsuite> per suite file, one <testcase> per case (classname: the suite file, name:
the case's name); a wrong decision is a <failure>, an invalid case an <error>. A suite file
that does not load is a <testsuite> holding one <error> case.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from pep.dev.suite import CaseResult


def junit_xml(
    results: Sequence[CaseResult],
    times: Mapping[int, float] | None = None,
    broken: Mapping[str, str] | None = None,
    name: str = "pep test",
) -> ET.ElementTree:
    """`times`: seconds per result (by index in `results`); `broken`: suite file -> why it did not run."""
    times = times or {}
    root = ET.Element("testsuites", name=name)
    by_suite: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        by_suite.setdefault(r.suite, []).append(i)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for suite, indexes in by_suite.items():
        failures = sum(1 for i in indexes if not results[i].passed and results[i].decided != "error")
        errors = sum(1 for i in indexes if results[i].decided == "error")
        seconds = sum(times.get(i, 0.0) for i in indexes)
        element = _suite(root, suite, len(indexes), failures, errors, seconds)
        for i in indexes:
            _case(element, results[i], times.get(i, 0.0))
        totals["tests"] += len(indexes)
        totals["failures"] += failures
        totals["errors"] += errors
        total_time += seconds
    for suite, why in (broken or {}).items():
        element = _suite(root, suite, 1, 0, 1, 0.0)
        case = ET.SubElement(element, "testcase", classname=suite, name="load suite", file=suite, time="0.000")
        error = ET.SubElement(case, "error", message=_clean(why.splitlines()[0] if why else "did not load"))
        error.set("type", "suite")
        error.text = _clean(why)
        totals["tests"] += 1
        totals["errors"] += 1
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str, tree: ET.ElementTree) -> None:
    """Write atomically: a CI step never reads half a report."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _suite(root: ET.Element, name: str, tests: int, failures: int, errors: int, seconds: float) -> ET.Element:
    return ET.SubElement(
        root,
        "testsuite",
        name=_clean(name),
        tests=str(tests),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{seconds:.3f}",
    )


def _case(parent: ET.Element, r: CaseResult, seconds: float) -> None:
    case = ET.SubElement(
        parent,
        "testcase",
        classname=_clean(r.suite),
        name=_clean(r.name),
        file=_clean(r.suite),
        line=str(r.line),
        time=f"{seconds:.3f}",
    )
    if r.passed:
        return
    invalid = r.decided == "error"
    first = r.problems[0] if r.problems else f"expected {r.expected}, got {r.decided}"
    kind = "error" if invalid else "failure"
    child = ET.SubElement(case, kind, message=_clean(first))
    child.set("type", "invalid case" if invalid else "wrong decision")
    child.text = _clean(r.describe())


def _clean(text: str) -> str:
    """XML 1.0 cannot carry control characters (a case name may hold any): they become U+FFFD."""
    return "".join(
        ch
        if ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd") or ch >= "\U00010000"
        else "\ufffd"
        for ch in text
    )
