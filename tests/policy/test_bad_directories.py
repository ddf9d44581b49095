"""Bad policy directories: every bad value of every file is `file:line: message`, never a crash.

Each case of the table is checked three ways: `pep validate` (the real CLI in a subprocess)
prints the located problem and exits 1 without a traceback; `load_snapshot` raises
PolicyLoadError naming it; a running store (real PolicyStore, real Metrics registry) keeps
its last good version and counts one failed reload. A few cases also run against a real
server, and the schema rules (`policies_require_schema`) have their own tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pep.errors import PolicyLoadError
from pep.metrics import Metrics
from pep.policy.loader import load_snapshot
from pep.policy.store import PolicyStore
from tests.harness.estate import write_estate
from tests.harness.server import Harness
from tests.harness.waits import metrics_text, wait_for

ROOT = Path(__file__).resolve().parents[2]
AGENT = "agents:\n  - {id: worker, owner: team@example.com, groups: [workers]}\n"
PERMIT = "permit(principal, action, resource);\n"
TEMPLATE = '@id("grant")\npermit(principal == ?principal, action, resource);\n'


@dataclass(frozen=True)
class Bad:
    """One bad change to the fixed estate: `write(dir)` makes it; the problem is `where` + `says`."""

    name: str
    write: Callable[[Path], None]
    where: str  # "file:line" as `pep validate` prints it, relative to the directory
    says: str  # a fragment of the message
    needs_non_root: bool = False


def text(rel: str, content: str | bytes) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return write


def agents(entry: str) -> Callable[[Path], None]:
    """agents.yaml with the estate's worker on line 2 and `entry` on line 3."""
    return text("agents.yaml", AGENT + f"  - {entry}\n")


def with_template(rel: str, content: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        (d / "grant.cedar").write_text(TEMPLATE)
        text(rel, content)(d)

    return write


def directory_instead(rel: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        if (d / rel).exists():
            (d / rel).unlink()
        (d / rel).mkdir()
        (d / rel / "inner").write_text("x")

    return write


def symlink(rel: str, target: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        if (d / rel).exists() or (d / rel).is_symlink():
            (d / rel).unlink()
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, d / rel)

    return write


def fifo(rel: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        (d / rel).unlink()
        os.mkfifo(d / rel)

    return write


def huge(rel: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        with open(d / rel, "wb") as f:
            f.truncate(40 * 1024 * 1024)  # sparse: costs no disk

    return write


def unreadable(rel: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        os.chmod(d / rel, 0)

    return write


def laughs() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def nested_yaml(depth: int) -> str:
    return AGENT + "  - {id: deep, owner: o, attributes: " + "{a: " * depth + "1" + "}" * depth + "}\n"


BIG = "9" * 5000
CASES = [
    # agents.yaml: every field and type
    Bad("expires-not-a-date", agents("{id: a, owner: o, expires: 2027-13-45}"), "agents.yaml:3", "2027-13-45"),
    Bad("expires-quoted-bad-date", agents('{id: a, owner: o, expires: "2027-02-30"}'), "agents.yaml:3", "`expires`"),
    Bad("expires-a-list", agents("{id: a, owner: o, expires: [1]}"), "agents.yaml:3", "`expires` must be a date"),
    Bad("status-unknown", agents("{id: a, owner: o, status: paused}"), "agents.yaml:3", "`status` must be one of"),
    Bad("status-a-mapping", agents("{id: a, owner: o, status: {x: 1}}"), "agents.yaml:3", "`status` must be one of"),
    Bad("groups-a-string", agents("{id: a, owner: o, groups: workers}"), "agents.yaml:3", "`groups` must be a list"),
    Bad("groups-numbers", agents("{id: a, owner: o, groups: [1, .nan]}"), "agents.yaml:3", "`groups` must be a list"),
    Bad("owner-missing", agents("{id: a}"), "agents.yaml:3", "`owner` is required"),
    Bad("owner-a-list", agents("{id: a, owner: [o]}"), "agents.yaml:3", "`owner` is required"),
    Bad("id-a-number", agents("{id: 5, owner: o}"), "agents.yaml:3", "`id` must be a non-empty string"),
    Bad("id-duplicate", agents("{id: worker, owner: o}"), "agents.yaml:3", "duplicate agent id"),
    Bad("unknown-key", agents("{id: a, owner: o, role: admin}"), "agents.yaml:3", "unknown key 'role'"),
    Bad("attributes-a-list", agents("{id: a, owner: o, attributes: [1]}"), "agents.yaml:3", "must be a mapping"),
    Bad("attribute-float", agents("{id: a, owner: o, attributes: {n: 1.5}}"), "agents.yaml:3", "floating-point"),
    Bad("attribute-nan", agents("{id: a, owner: o, attributes: {n: .nan}}"), "agents.yaml:3", "nan is not a Cedar"),
    Bad("attribute-null", agents("{id: a, owner: o, attributes: {n: null}}"), "agents.yaml:3", "null is not a Cedar"),
    Bad("attribute-date", agents("{id: a, owner: o, attributes: {d: 2020-01-01}}"), "agents.yaml:3", "YAML date"),
    Bad(
        "attribute-over-i64",
        agents("{id: a, owner: o, attributes: {n: 99999999999999999999}}"),
        "agents.yaml:3",
        "64-bit integers",
    ),
    Bad("int-of-5000-digits", agents(f"{{id: a, owner: o, attributes: {{n: {BIG}}}}}"), "agents.yaml:3", "digits"),
    Bad("duplicate-yaml-key", agents("{id: a, id: b, owner: o}"), "agents.yaml:3", "duplicate key 'id'"),
    Bad("top-level-a-list", text("agents.yaml", "- a\n"), "agents.yaml:1", "expected a mapping"),
    Bad("agents-not-a-list", text("agents.yaml", "agents: {a: 1}\n"), "agents.yaml:1", "`agents` must be a list"),
    Bad("broken-yaml", text("agents.yaml", AGENT + "  - {id: a\n"), "agents.yaml:4", "invalid YAML"),
    Bad("nul-character", text("agents.yaml", AGENT + "  - {id: a\0, owner: o}\n"), "agents.yaml:3", "U+0000"),
    Bad("nested-too-deep", text("agents.yaml", nested_yaml(200)), "agents.yaml:3", "nested more than 64"),
    Bad("nested-past-libyaml", text("agents.yaml", "agents: " + "[" * 5000), "agents.yaml:1", "nesting depth"),
    Bad("billion-laughs", text("agents.yaml", laughs()), "agents.yaml:1", "aliases expand"),
    Bad("recursive-alias", text("agents.yaml", "agents: &a [*a]\n"), "agents.yaml:1", "nested more than 64"),
    Bad("python-tag", text("agents.yaml", "agents: !!python/object:os.system ls\n"), "agents.yaml:1", "constructor"),
    Bad("bad-base64", text("agents.yaml", "agents: !!binary 'zz'\n"), "agents.yaml:1", "base64"),
    Bad("json-nested-deep", text("agents.yaml", "[" * 100_000 + "]" * 100_000), "agents.yaml:1", "nest"),
    Bad("agents-not-utf8", text("agents.yaml", AGENT.encode() + b"  - {id: \xff}\n"), "agents.yaml:3", "not UTF-8"),
    # entities.json
    Bad("entities-bad-json", text("entities.json", '[\n  {"uid": }\n]'), "entities.json:2", "invalid JSON"),
    Bad("entities-not-a-list", text("entities.json", '{"a": 1}'), "entities.json:1", "expected a JSON list"),
    Bad("entity-without-uid", text("entities.json", '[\n  {"attrs": {}}\n]'), "entities.json:2", "needs a uid"),
    Bad(
        "entity-nan",
        text("entities.json", '[\n  {"uid": {"type": "Doc", "id": "x"}, "attrs": {"n": NaN}, "parents": []}\n]'),
        "entities.json:2",
        'invalid entity Doc::"x"',
    ),
    Bad(
        "entity-off-schema",
        text("entities.json", '[\n{"uid": {"type": "Doc", "id": "x"}, "attrs": {"nope": 1}, "parents": []}\n]'),
        "entities.json:2",
        'invalid entity Doc::"x"',
    ),
    Bad(
        "entity-agent-clash",
        text("entities.json", '[{"uid": {"type": "Agent", "id": "worker"}, "attrs": {}, "parents": []}]'),
        "entities.json:1",
        "defined here and in agents.yaml",
    ),
    Bad("entities-nested-deep", text("entities.json", "[" * 100_000 + "]" * 100_000), "entities.json:1", "nested"),
    Bad("entities-5000-digits", text("entities.json", f"[{BIG}]"), "entities.json:1", "digits"),
    # links.yaml
    Bad("links-not-a-mapping", with_template("links.yaml", "- a\n"), "links.yaml:1", "`links` list"),
    Bad(
        "link-template-a-list",
        with_template("links.yaml", "links:\n  - {template: [grant], id: g1, values: {}}\n"),
        "links.yaml:2",
        "must be strings",
    ),
    Bad(
        "link-unknown-template",
        with_template("links.yaml", "links:\n  - {template: nope, id: g1, values: {}}\n"),
        "links.yaml:2",
        "no template with id 'nope'",
    ),
    Bad(
        "link-value-a-list",
        with_template("links.yaml", "links:\n  - {template: grant, id: g1, values: {'?principal': [1]}}\n"),
        "links.yaml:2",
        "?principal must be",
    ),
    Bad(
        "link-unknown-slot",
        with_template("links.yaml", "links:\n  - {template: grant, id: g1, values: {'?user': 'User::\"a\"'}}\n"),
        "links.yaml:2",
        "unknown slot",
    ),
    # killswitch.yaml
    Bad(
        "killswitch-all-a-number",
        text("killswitch.yaml", "disabled:\n  all: 1\n"),
        "killswitch.yaml:2",
        "`disabled.all`",
    ),
    Bad(
        "killswitch-agents-nested",
        text("killswitch.yaml", "disabled:\n  agents: [[a]]\n"),
        "killswitch.yaml:2",
        "must be a list of ids",
    ),
    Bad("killswitch-unknown-key", text("killswitch.yaml", "disabled:\n  bots: []\n"), "killswitch.yaml:2", "'bots'"),
    Bad("killswitch-a-list", text("killswitch.yaml", "- a\n"), "killswitch.yaml:1", "expected a mapping"),
    # limits.yaml
    Bad("rate-negative", text("limits.yaml", "default: {rate: -1}\n"), "limits.yaml:1", "from 0 to"),
    Bad("rate-nan", text("limits.yaml", "default: {rate: .nan}\n"), "limits.yaml:1", "from 0 to"),
    Bad("rate-infinite", text("limits.yaml", "default: {rate: .inf, burst: .inf}\n"), "limits.yaml:1", "from 0 to"),
    Bad("rate-huge", text("limits.yaml", f"default: {{rate: {'9' * 400}}}\n"), "limits.yaml:1", "from 0 to"),
    Bad("rate-a-string", text("limits.yaml", "agents:\n  worker: {rate: fast}\n"), "limits.yaml:2", "from 0 to"),
    Bad("burst-below-one", text("limits.yaml", "default: {rate: 5, burst: 0.5}\n"), "limits.yaml:1", "at least 1"),
    Bad("limits-a-list", text("limits.yaml", "- 1\n"), "limits.yaml:1", "expected a mapping"),
    Bad("limits-section-a-list", text("limits.yaml", "groups: [a]\n"), "limits.yaml:1", "`groups` must be a mapping"),
    Bad("limits-unknown-key", text("limits.yaml", "users: {}\n"), "limits.yaml:1", "unknown key 'users'"),
    # the schema
    Bad("schema-syntax", text("schema.cedarschema", "entity ;\n"), "schema.cedarschema:1", "invalid schema"),
    Bad(
        "schema-nested-deep",  # cedarpy's parser segfaults on this: pep must refuse it first
        text("schema.cedarschema", "entity A { a: " + "{ a: " * 5000 + "Long" + "}" * 5000 + "};\n"),
        "schema.cedarschema:1",
        "nested more than 64",
    ),
    Bad("schema-a-directory", directory_instead("schema.cedarschema"), "schema.cedarschema:1", "is a directory"),
    # .cedar files
    Bad("cedar-syntax", text("bad.cedar", PERMIT + "\npermit(\n"), "bad.cedar:3", "parse error"),
    Bad(
        "cedar-parens-2000-deep",  # a segfault inside cedarpy before
        text("deep.cedar", PERMIT + "permit(principal, action, resource) when { " + "(" * 2000 + ")" * 2000 + " };\n"),
        "deep.cedar:2",
        "nested more than 64",
    ),
    Bad(
        "cedar-3000-operators",
        text("long.cedar", "permit(principal, action, resource) when {\n" + " && ".join(["true"] * 3000) + " };\n"),
        "long.cedar:2",
        "more than 2,000 operators",
    ),
    Bad(
        "cedar-too-deep-for-pep",
        text("chain.cedar", "permit(principal, action, resource) when { " + " && ".join(["true"] * 700) + " };\n"),
        "chain.cedar:1",
        "nested too deeply",
    ),
    Bad("cedar-not-utf8", text("bytes.cedar", PERMIT.encode() + b"// \xc3\x28\n"), "bytes.cedar:2", "not UTF-8"),
    Bad("cedar-nul", text("nul.cedar", "permit(principal, action, resource)\0;\n"), "nul.cedar:1", "parse error"),
    Bad(
        "cedar-off-schema",
        text("off.cedar", 'permit(principal, action == Action::"fly", resource);\n'),
        "off.cedar:1",
        "schema validation",
    ),
    Bad(
        "cedar-duplicate-id",
        text("dup.cedar", '@id("read-docs")\npermit(principal, action, resource);\n'),
        "dup.cedar:1",
        "duplicate policy id",
    ),
    # the file system
    Bad("agents-a-directory", directory_instead("agents.yaml"), "agents.yaml:1", "is a directory, not a file"),
    Bad("symlink-to-itself", symlink("links.yaml", "links.yaml"), "links.yaml:1", "symlink loop"),
    Bad("folder-symlink-loop", symlink("team/up", ".."), "team/up:1", "symlink loop"),
    Bad("dangling-symlink", symlink("limits.yaml", "nowhere.yaml"), "limits.yaml:1", "does not exist"),
    Bad("agents-a-fifo", fifo("agents.yaml"), "agents.yaml:1", "not a regular file"),
    Bad("entities-huge", huge("entities.json"), "entities.json:1", "over the limit"),
    Bad("agents-unreadable", unreadable("agents.yaml"), "agents.yaml:1", "Permission denied", needs_non_root=True),
    Bad("folder-unreadable", lambda d: (d / "team").mkdir() or unreadable("team")(d), "team:1", "cannot list", True),
]


def params() -> list[object]:
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    skip = pytest.mark.skip(reason="root reads any file")
    return [pytest.param(c, id=c.name, marks=[skip] if c.needs_non_root and root else []) for c in CASES]


def bad_estate(tmp_path: Path, case: Bad) -> Path:
    d = write_estate(tmp_path / "policies")
    case.write(d)
    return d


def failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("pep_policy_reloads_total", {"result": "failure"}) or 0.0


@pytest.mark.parametrize("case", params())
def test_pep_validate_prints_file_line_and_exits_1(tmp_path: Path, case: Bad) -> None:
    d = bad_estate(tmp_path, case)
    run = subprocess.run(
        [sys.executable, "-m", "pep", "validate", str(d)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    located = [line for line in run.stderr.splitlines() if line.startswith(f"{d}/{case.where}:")]
    assert located, run.stderr
    assert any(case.says in line for line in located), run.stderr


@pytest.mark.parametrize("case", params())
def test_load_snapshot_raises_a_located_policy_load_error(tmp_path: Path, case: Bad) -> None:
    d = bad_estate(tmp_path, case)
    with pytest.raises(PolicyLoadError) as info:
        load_snapshot(str(d))
    assert any(str(p).startswith(f"{case.where}:") and case.says in p.message for p in info.value.problems), str(
        info.value
    )


@pytest.mark.parametrize("case", params())
def test_a_running_store_keeps_the_last_good_set_and_counts_the_failure(tmp_path: Path, case: Bad) -> None:
    d = write_estate(tmp_path / "policies")
    metrics = Metrics(process=False)
    store = PolicyStore(str(d), metrics)
    assert store.load()
    good = store.current()
    assert good is not None
    case.write(d)
    assert store.reload_if_changed() is False
    assert store.current() is good
    assert failures(metrics) == 1
    assert store.last_error is not None and case.where in str(store.last_error)
    assert store.reload_if_changed() is None  # the same bad content is not tried again
    assert failures(metrics) == 1


# --- against a real server ----------------------------------------------------------------------


FAST_RELOAD = {"reload": {"settle_seconds": 0.05, "poll_seconds": 0.2}}


def failure_count(h: Harness) -> float:
    for line in metrics_text(h).splitlines():
        if line.startswith('pep_policy_reloads_total{result="failure"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("expires-not-a-date", "cedar-parens-2000-deep")])
def test_a_real_server_keeps_serving_and_counts_the_failure(
    harness_factory: Callable[..., Harness], case: Bad, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness_factory(**FAST_RELOAD)
    before = h.server.store.current().version
    assert h.authorize(h.token()).reason == "allowed"
    case.write(h.policies)
    assert wait_for(lambda: failure_count(h) == 1, timeout=30)
    assert h.server.store.current().version == before
    assert h.authorize(h.token()).reason == "allowed"
    assert case.where in str(h.server.store.last_error)
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("pep.policy"))


# --- the schema (policies_require_schema) -------------------------------------------------------


def test_losing_the_schema_is_a_failed_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = write_estate(tmp_path / "policies")
    metrics = Metrics(process=False)
    store = PolicyStore(str(d), metrics)
    assert store.load()
    good = store.current()
    (d / "schema.cedarschema").unlink()
    with caplog.at_level("ERROR", logger="pep.policy.store"):
        assert store.reload_if_changed() is False
    assert store.current() is good
    assert failures(metrics) == 1
    assert "schema.cedarschema:1:1: missing: policies_require_schema is true" in str(store.last_error)
    assert any("policies_require_schema" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_start_up_without_a_schema_serves_nothing_until_one_exists(tmp_path: Path) -> None:
    d = write_estate(tmp_path / "policies")
    schema = (d / "schema.cedarschema").read_text()
    (d / "schema.cedarschema").unlink()
    metrics = Metrics(process=False)
    store = PolicyStore(str(d), metrics)
    assert store.load() is False
    assert store.current() is None
    (d / "schema.cedarschema").write_text(schema)
    assert store.reload_if_changed() is True
    assert store.current() is not None and store.current().schema is not None


def test_schemas_are_optional_when_the_config_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = write_estate(tmp_path / "policies")
    store = PolicyStore(str(d), Metrics(process=False), require_schema=False)
    assert store.load()
    (d / "schema.cedarschema").unlink()
    with caplog.at_level("WARNING", logger="pep.policy.store"):
        assert store.reload_if_changed() is True
    assert store.current().schema is None
    assert any("no schema" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_policies_require_schema_is_a_top_level_boolean() -> None:
    from pep.config import parse_config
    from pep.errors import ConfigError

    assert parse_config({}).policies_require_schema is True
    assert parse_config({"policies_require_schema": False}).policies_require_schema is False
    with pytest.raises(ConfigError, match="policies_require_schema"):
        parse_config({"policies_require_schema": "no"})


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_warn_about_a_schemaless_directory(tmp_path: Path, command: str) -> None:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "p.cedar").write_text(PERMIT)
    (d / "agents.yaml").write_text(AGENT)
    (d / "tests").mkdir()
    (d / "tests" / "t.yaml").write_text(
        "cases:\n  - name: anyone\n    principal: 'Agent::\"worker\"'\n    action: read\n"
        "    resource: 'Doc::\"x\"'\n    expect: allow\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pep", command, str(d)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout + run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "policies_require_schema" in warnings[0]


# --- pep agents ---------------------------------------------------------------------------------


def test_pep_agents_shows_an_invalid_status_as_an_error_not_suspended(tmp_path: Path) -> None:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "agents.yaml").write_text(AGENT + "  - {id: odd, owner: o, status: paused}\n")
    run = subprocess.run(
        [sys.executable, "-m", "pep", "agents", "--json", str(d)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"{d}/agents.yaml:3:25: agents[1] (odd): `status` must be one of" in run.stderr
    row = next(r for r in json.loads(run.stdout) if r["id"] == "odd")
    assert row["status"] == "invalid"
    status_error = "error: agents.yaml:3: `status` must be one of active, suspended, decommissioned, got 'paused'"
    assert row["flags"] == [status_error]


def test_pep_agents_on_a_bad_date_is_located_not_a_traceback(tmp_path: Path) -> None:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "agents.yaml").write_text(AGENT + "  - {id: a, owner: o, expires: 2027-13-45}\n")
    run = subprocess.run(
        [sys.executable, "-m", "pep", "agents", str(d)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"{d}/agents.yaml:3:" in run.stderr and "2027-13-45" in run.stderr


def test_an_unexpected_error_logs_one_line_and_its_traceback_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = write_estate(tmp_path / "policies")
    store = PolicyStore(str(d), Metrics(process=False))

    def broken_listener(_snapshot: object) -> None:
        raise RuntimeError("listener bug")

    store.on_swap(broken_listener)
    with caplog.at_level("ERROR", logger="pep.policy.store"):
        assert store.load()
        (d / "note.cedar").write_text("// a change\n")
        assert store.reload_if_changed() is True  # served: a listener's bug does not undo the swap
    lines = [r for r in caplog.records if "listener bug" in r.getMessage()]
    assert len(lines) == 2 and str(d) in lines[0].getMessage()
    assert [r.exc_info is not None for r in lines] == [True, False]
