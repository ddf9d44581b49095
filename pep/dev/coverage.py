"""Policy coverage of a suite run (`pep test --coverage`, docs/policy-tests.md).

A case covers the policies that determined its decision. A template is covered through its
links: a case determined by a link counts for the link's template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pep.dev.suite import CaseResult
from pep.policy.snapshot import Snapshot


@dataclass(frozen=True)
class Row:
    id: str
    source: str  # file:line
    template: bool
    cases: int
    # For a template: cases per link that determined them.
    links: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Coverage:
    rows: tuple[Row, ...]

    @property
    def covered(self) -> int:
        return sum(1 for r in self.rows if r.cases)

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def percent(self) -> float:
        """Share of policies and templates some case determined; 100 when there are none."""
        return 100.0 * self.covered / self.total if self.total else 100.0

    def uncovered(self) -> list[Row]:
        return [r for r in self.rows if not r.cases]

    def describe(self) -> str:
        width = max((len(r.id) for r in self.rows), default=0)
        lines = ["coverage (cases each policy determined):"]
        for r in self.rows:
            note = ""
            if r.template:
                via = ", ".join(f"{link} {n}" for link, n in r.links) or "none"
                note = f"  (template; links: {via})"
            lines.append(f"  {r.cases:5d}  {r.id.ljust(width)}  {r.source}{note}")
        missing = self.uncovered()
        if missing:
            lines.append(f"not determined by any case ({len(missing)}):")
            lines += [f"  {r.id} ({r.source})" for r in missing]
        lines.append(
            f"coverage: {self.covered} of {self.total} policies and templates determined by some case "
            f"({percent_text(self.percent)}%)"
        )
        return "\n".join(lines)


def percent_text(value: float) -> str:
    """Rounded down, so a set that is not fully covered never shows 100%."""
    return str(int(value))


def coverage_of(snapshot: Snapshot, results: Sequence[CaseResult]) -> Coverage:
    """How many of `results` each live policy and template of `snapshot` determined."""
    counts: dict[str, int] = {}
    link_counts: dict[str, dict[str, int]] = {}
    for result in results:
        hit: set[str] = set()
        for pid in result.policies:
            template = snapshot.policy_index.template_of(pid)
            if template is not None:
                hit.add(template)
                per_link = link_counts.setdefault(template, {})
                per_link[pid] = per_link.get(pid, 0) + 1
            else:
                hit.add(pid)
        for pid in hit:
            counts[pid] = counts.get(pid, 0) + 1
    links_of: dict[str, list[str]] = {}
    for pid in snapshot.policies:
        template = snapshot.policy_index.template_of(pid)
        if template is not None:
            links_of.setdefault(template, []).append(pid)
    rows = []
    for info in sorted(snapshot.policies.values(), key=lambda p: (p.path, p.line, p.id)):
        if snapshot.policy_index.template_of(info.id) is not None:
            continue  # a link: counted for its template
        per_link = link_counts.get(info.id, {})
        links = tuple((link, per_link.get(link, 0)) for link in sorted(links_of.get(info.id, [])))
        rows.append(Row(info.id, f"{info.path}:{info.line}", info.template, counts.get(info.id, 0), links))
    return Coverage(tuple(rows))
