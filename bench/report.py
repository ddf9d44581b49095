"""make bench's tables: every case, the summary lines, and the performance target table."""

from __future__ import annotations

import math
from typing import Any

FLOOR, FLOOR_OPEN = "no-op floor", "no-op floor @1000/s"
ROTATING, CERBOS_ROTATING = "pep rotating (bearer)", "Cerbos rotating"
NO_REPEAT, CERBOS_NO_REPEAT = "pep no-repeat (bearer)", "Cerbos no-repeat"
DPOP, BATCH = "pep DPoP-bound, fresh proof/call", "pep AuthorizeBatch x50 (DPoP)"
OPEN, CERBOS_OPEN = "pep rotating @1000/s", "Cerbos rotating @1000/s"


CODES = {"3": "INVALID_ARGUMENT", "4": "DEADLINE_EXCEEDED", "8": "RESOURCE_EXHAUSTED", "12": "UNIMPLEMENTED"}
CODES |= {"13": "INTERNAL", "14": "UNAVAILABLE"}


def notes(run: dict[str, Any]) -> list[str]:
    """What one run's non-numeric fields say that a reader must see."""
    out = []
    if run.get("probe"):
        out.append(run["probe"])
    if run.get("wrapped"):
        out.append("request file wrapped (repeats)")
    for code in sorted(run.get("error_codes") or {}):
        out.append(f"gRPC {CODES.get(code, code)}")
    return out


def _notes(m: dict[str, Any]) -> str:
    out = []
    if m.get("errors"):
        out.append(f"{m['errors']:.0f} errors")
    if m.get("denied"):
        out.append(f"{m['denied']:.0f} denied")
    if "logged" in m and m["logged"] < 0.99 * m["expected_log"]:
        out.append(f"log has {m['logged']:.0f} of {m['expected_log']:.0f} decisions")
    if "memo_hit_share" in m:
        out.append(f"memo hits {m['memo_hit_share']:.0%} (warm-up included)")
    if m.get("send_lag_p99_ms", 0) > 0.5:
        out.append(f"sends {m['send_lag_p99_ms']:.1f} ms late (p99)")
    for core, key in (("0", "other_server_core"), ("1", "other_client_core")):
        if m.get(key, 0) > 0.1:
            out.append(f"core {core}: {m[key]:.0%} other processes or kernel threads")
    return ", ".join(out + m["notes"])


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"


def table(
    rows: list[tuple[str, str, dict[str, Any]]], floor: dict[str, Any], floor_open: dict[str, Any], eng: Any
) -> None:
    print()
    print(
        f"{'case':34s} {'decisions/s':>11s} {'p50 ms':>7s} {'p99 ms':>7s} {'vs floor':>10s} "
        f"{'srv CPU':>7s} {'dec/CPU-s':>9s} {'load CPU':>8s}  notes"
    )
    for name, mode, m in rows:
        if mode == "closed":
            ratio = f"{m['decisions_per_s'] / floor['decisions_per_s']:9.2f}x"
        else:
            ratio = f"{m['p50_ms'] / floor_open['p50_ms']:5.2f}x p50"
        print(
            f"{name:34s} {m['decisions_per_s']:11.0f} {m['p50_ms']:7.3f} {m['p99_ms']:7.3f} {ratio:>10s} "
            f"{_pct(m['server_cpu']):>7s} {m['per_cpu_s']:9.0f} {_pct(m['loadgen_cpu']):>8s}  {_notes(m)}"
        )
    print(
        f"{'engine in-process (no gRPC)':34s} {eng['decisions_per_s']:11.0f} {eng['p50_us'] / 1000:7.3f} "
        f"{eng['p99_us'] / 1000:7.3f} {eng['decisions_per_s'] / floor['decisions_per_s']:9.2f}x"
    )
    print(
        "srv CPU: the server's CPU over the measured phase (1 = its core saturated); dec/CPU-s: decisions per "
        "server CPU-second;\nload CPU: the load generator's own CPU, of one core (open loop: it spins between sends)"
    )
    busy = [n for n, _, m in rows if max(m.get("other_server_core", 0), m.get("other_client_core", 0)) > 0.1]
    if busy:
        print(
            f"NOTE: other processes or kernel threads used more than 10% of the server or load core in "
            f"{len(busy)} of {len(rows)} cases (median of the repetitions): if that was another program, those "
            "figures are skewed; rerun on a quiet machine"
        )


def summary(m: dict[str, dict[str, Any]], per_process: str, shared: str, redis_url: str | None) -> None:
    single, batch = m[DPOP]["decisions_per_s"], m[BATCH]["decisions_per_s"]
    print(f"\nbatch vs single decisions/s (DPoP-bound): {batch / single:.2f}x")
    if not redis_url:
        print("shared state (Redis): skipped, redis-server is not installed (Debian: apt-get install redis-server)")
        return
    local, far = m[per_process], m[shared]
    # Per decision on the pinned server core: the extra time the shared buckets and replay cache cost.
    extra_ms = 1000 / far["decisions_per_s"] - 1000 / local["decisions_per_s"]
    print(
        f"shared state vs per process (2 buckets + DPoP replay per decision): "
        f"{far['decisions_per_s'] / local['decisions_per_s']:.2f}x decisions/s, "
        f"{extra_ms:+.3f} ms per decision, p50 {far['p50_ms'] - local['p50_ms']:+.3f} ms"
    )


def log_modes(m: dict[str, dict[str, Any]], names: list[str]) -> None:
    """What `decision_log.required` costs: each setting against the rotating case without it."""
    base = m[ROTATING]
    for name in names:
        r = m[name]
        print(
            f"{name} vs not required: {r['decisions_per_s'] / base['decisions_per_s']:.2f}x decisions/s, "
            f"p50 {r['p50_ms'] - base['p50_ms']:+.2f} ms, p99 {r['p99_ms'] - base['p99_ms']:+.2f} ms"
        )


def targets(m: dict[str, dict[str, Any]], skip_cerbos: bool, client: str) -> None:
    def cpu(*names: str) -> str:
        spin = " (spinning between sends)" if names[0].endswith("/s") else ""
        return ", ".join(f"{n.split(' ')[0]} {_pct(m[n]['loadgen_cpu'])}" for n in names if n in m) + spin

    def versus(pep: str, other: str) -> str:
        if other not in m:
            return "skipped (--skip-cerbos)"
        a, b = m[pep], m[other]
        return (
            f"{a['decisions_per_s'] / b['decisions_per_s']:.2f}x "
            f"({a['decisions_per_s']:,.0f} / {b['decisions_per_s']:,.0f}; per server CPU-s "
            f"{a['per_cpu_s'] / b['per_cpu_s']:.2f}x)"
        )

    cerbos_p99 = "" if skip_cerbos else f" (Cerbos {m[CERBOS_OPEN]['p99_ms']:.2f})"
    rows = [
        ("rotating vs Cerbos per core", versus(ROTATING, CERBOS_ROTATING), cpu(ROTATING, CERBOS_ROTATING)),
        (
            "rotating vs the floor",
            f"{m[ROTATING]['decisions_per_s'] / m[FLOOR]['decisions_per_s']:.2f}x",
            cpu(ROTATING, FLOOR),
        ),
        ("no-repeat vs Cerbos per core", versus(NO_REPEAT, CERBOS_NO_REPEAT), cpu(NO_REPEAT, CERBOS_NO_REPEAT)),
        ("DPoP-bound decisions/s", f"{m[DPOP]['decisions_per_s']:,.0f}", cpu(DPOP)),
        ("open loop 1,000/s bearer p99 ms", f"pep {m[OPEN]['p99_ms']:.2f}{cerbos_p99}", cpu(OPEN, CERBOS_OPEN)),
        (
            "AuthorizeBatch x50 vs single dec/s",
            f"{m[BATCH]['decisions_per_s'] / m[DPOP]['decisions_per_s']:.2f}x",
            cpu(BATCH, DPOP),
        ),
    ]
    floors = [(n.split(", ")[1].split()[0], m[n]) for n in m if n.startswith(FLOOR + ", ")]
    check = "; ".join(
        f"{name} client {f['decisions_per_s']:,.0f}/s at {_pct(f['loadgen_cpu'])} loadgen CPU"
        for name, f in [(client, m[FLOOR]), *floors]
    )
    rows.append(("loadgen check: the floor at c=16", check, ""))
    print(f"\n{'performance target':34s} {'measured':54s} loadgen CPU")
    for name, value, load in rows:
        print(f"{name:34s} {value:54s} {load}")
