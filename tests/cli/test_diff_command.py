"""`pep diff OLD NEW` on real directories and a real git repository: policies by id (formatting is no
change), schema declarations, agents and their status, links, other files; `--format json`; exit 0
same, 1 different, 2 usage errors (missing directory, unknown revision, a side that does not parse)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pep.cli import main

Capture = pytest.CaptureFixture[str]

SCHEMA = """\
entity User;
entity Doc { owner: User };
action read, write appliesTo { principal: [User], resource: [Doc] };
"""
POLICIES = """\
@id("read.any")
permit (principal, action == Action::"read", resource);

@id("write.own")
permit (principal, action == Action::"write", resource) when { resource.owner == principal };

@id("grant")
permit (principal == ?principal, action == Action::"read", resource);
"""
AGENTS = """\
agents:
  - {id: bot, owner: team@example.com, status: active}
  - {id: helper, owner: team@example.com, status: active, groups: [a]}
  - {id: old, owner: team@example.com}
"""
LINKS = """\
links:
  - {template: grant, id: grant.alice, values: {"?principal": 'User::"alice"'}}
"""


def _estate(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.cedarschema").write_text(SCHEMA)
    (root / "p.cedar").write_text(POLICIES)
    (root / "agents.yaml").write_text(AGENTS)
    (root / "links.yaml").write_text(LINKS)
    return root


def _edit(root: Path) -> None:
    """One of each kind of change."""
    text = POLICIES.replace('action == Action::"write"', 'action in [Action::"write"]')
    text += '\n@id("new.one")\nforbid (principal, action, resource == Doc::"secret");\n'
    (root / "p.cedar").write_text(text.replace('@id("read.any")\npermit', '@id("read.any")\npermit  ', 1))
    schema = SCHEMA.replace("entity Doc { owner: User };", "entity Doc { owner: User, title: String };")
    (root / "schema.cedarschema").write_text(schema + "entity Team;\n")
    agents = AGENTS.replace(
        "id: bot, owner: team@example.com, status: active", "id: bot, owner: x@y, status: suspended"
    )
    (root / "agents.yaml").write_text(
        agents.replace("  - {id: old, owner: team@example.com}\n", "  - {id: nu, owner: o}\n")
    )
    (root / "links.yaml").write_text(LINKS.replace('User::"alice"', 'User::"bob"'))
    (root / "entities.json").write_text("[]")


def test_the_same_directory_is_no_difference(tmp_path: Path, capsys: Capture) -> None:
    a = _estate(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    # Formatting and comments are no change, in policies and the schema.
    (b / "p.cedar").write_text("// a comment\n" + POLICIES.replace("permit (", "permit(\n  "))
    (b / "schema.cedarschema").write_text("// types\n" + SCHEMA.replace("{ owner: User }", "{\n  owner: User,\n}"))
    assert main(["diff", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == "no differences"


def test_every_kind_of_change(tmp_path: Path, capsys: Capture) -> None:
    a = _estate(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    _edit(b)
    assert main(["diff", str(a), str(b), "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["same"] is False
    assert result["policies"]["added"] == [{"id": "new.one", "source": "p.cedar:10"}]
    assert result["policies"]["removed"] == []
    assert [c["id"] for c in result["policies"]["changed"]] == ["write.own"]
    assert result["schema"]["mode"] == "structural"
    assert result["schema"]["added"] == [{"kind": "entity", "name": "Team"}]
    assert result["schema"]["changed"] == [{"kind": "entity", "name": "Doc"}]
    agents = result["agents"]
    assert agents["added"] == [{"id": "nu", "status": "active"}]
    assert agents["removed"] == [{"id": "old", "status": "active"}]
    assert agents["changed"] == [
        {"id": "bot", "status": {"old": "active", "new": "suspended"}, "fields": ["owner", "status"]}
    ]
    assert result["links"]["changed"] == [{"id": "grant.alice", "fields": ["values"]}]
    assert result["files"]["added"] == ["entities.json"]
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    for line in (
        "  + new.one (p.cedar:10)",
        "  ~ write.own (p.cedar:4)",
        "  + entity Team",
        "  ~ entity Doc",
        "  ~ bot: status active -> suspended, owner",
        "  - old (active)",
        "  ~ grant.alice: values",
        "  + entities.json",
    ):
        assert line in out.splitlines(), out
    assert out.rstrip().endswith("difference(s)")
    # The reverse direction swaps added and removed.
    assert main(["diff", str(b), str(a), "--format", "json"]) == 1
    back = json.loads(capsys.readouterr().out)
    assert back["policies"]["removed"] == [{"id": "new.one", "source": "p.cedar:10"}]
    assert back["schema"]["removed"] == [{"kind": "entity", "name": "Team"}]


def test_shadow_policies_and_removed_schema(tmp_path: Path, capsys: Capture) -> None:
    a = _estate(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "shadow").mkdir()
    (b / "shadow" / "s.cedar").write_text('@id("try")\npermit (principal, action, resource);\n')
    (b / "schema.cedarschema").unlink()
    assert main(["diff", str(a), str(b), "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["shadow_policies"]["added"] == [{"id": "try", "source": "shadow/s.cedar:1"}]
    assert {e["name"] for e in result["schema"]["removed"]} == {"User", "Doc", "read", "write"}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the estate in policies/, one commit, then edited in the work tree."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _estate(root / "policies")
    (root / "README").write_text("not policies\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    return root


def test_git_revision_against_the_work_tree(repo: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = repo / "policies"
    assert main(["diff", "git:HEAD", str(policies)]) == 0
    assert "no differences" in capsys.readouterr().out
    _edit(policies)
    assert main(["diff", "git:HEAD", str(policies), "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["old"] == "git:HEAD"
    assert [p["id"] for p in result["policies"]["added"]] == ["new.one"]
    assert result["agents"]["changed"][0]["status"] == {"old": "active", "new": "suspended"}
    _git(repo, "commit", "-qam", "second")
    # Either side may be the revision; both revisions: the current directory's folder.
    assert main(["diff", str(policies), "git:HEAD~1", "--format", "json"]) == 1
    assert [p["id"] for p in json.loads(capsys.readouterr().out)["policies"]["removed"]] == ["new.one"]
    monkeypatch.chdir(policies)
    assert main(["diff", "git:HEAD~1", "git:HEAD"]) == 1
    assert "+ new.one" in capsys.readouterr().out
    assert main(["diff", "git:HEAD", "git:HEAD"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["git:nope", "{policies}"], "git:nope: unknown revision"),
        (["git:--output=/tmp/x", "{policies}"], "not a revision"),
        (["git:", "{policies}"], "not a revision"),
        (["{policies}", "{missing}"], "no such directory"),
        (["git:HEAD", "{outside}"], "is not in a git repository"),
        (["git:HEAD", "{later}"], "the revision has no later"),
        (["{policies}", "{broken}"], "cannot compare: p.cedar:1"),
    ],
)
def test_usage_errors(repo: Path, tmp_path: Path, capsys: Capture, argv: list[str], says: str) -> None:
    paths = {
        "policies": str(repo / "policies"),
        "missing": str(tmp_path / "missing"),
        "outside": str(_estate(tmp_path / "outside")),
        "later": str(_estate(repo / "later")),
        "broken": str(tmp_path / "broken"),
    }
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "p.cedar").write_text("permit (principal, action, resource) when {;\n")
    args = [paths.get(a.strip("{}"), a) if a.startswith("{") else a for a in argv]
    assert main(["diff", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.splitlines()) == 1, err


def test_schema_namespaces_annotations_and_the_text_fallback() -> None:
    from pep.dev.schema_diff import schema_diff

    old = 'namespace App { entity A; @doc("x") action "do it", b; type T = {n: Long}; }\nentity Top;'
    new = 'namespace App {\n  entity A; @doc("y") action "do it";\n  action b;\n  type T = {n: Long,};\n}\n'
    result = schema_diff(old, new)
    assert result["mode"] == "structural"
    assert result["removed"] == [{"kind": "entity", "name": "Top"}]
    assert result["changed"] == [{"kind": "action", "name": "App::b"}, {"kind": "action", "name": "App::do it"}]
    assert schema_diff(old, old)["changed"] == []
    text = schema_diff(old, 'entity "unterminated')
    assert text["mode"] == "text" and text["lines_added"] == 1 and text["lines_removed"] == 2
