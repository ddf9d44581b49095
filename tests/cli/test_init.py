"""`pep init`: the generated repository validates, formats and passes its suite; its GitHub workflow's
and GitLab job's steps, run in order in a fresh git repository with pep from this checkout (only the
install step left out: no network), all pass; the replay step runs once a decision-log sample is
there; this repository's pre-commit hooks pass on it; a non-empty or odd DIR and a hostile --install
are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep.cli import main
from pep.dev.repo_ci import INSTALL_STEP
from tests.harness.server import Harness

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: its `pep` is this checkout's
SKIPPED_SAMPLE = (
    '{"ts": "2026-12-01T00:00:00Z", "decision_id": "d-1", "decision": "deny", "reason": "token_invalid", '
    '"action": "read_document", "resource": {"type": "Document", "id": "plans/roadmap.md"}}\n'
)


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PEP_TRACEBACK", None)
    return env


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """`pep init` into a new directory, then `git init` and a first commit there."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert shutil.which("pep", path=str(BIN)) == str(BIN / "pep"), "this checkout's pep is not in the venv"
    root = tmp_path / "policy-repo"
    assert main(["init", str(root)]) == 0
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "pep init")
    return root


def _run(repo: Path, shell: list[str], command: str) -> str:
    proc = subprocess.run([*shell, command], cwd=repo, env=_env(), capture_output=True, text=True, timeout=120)
    transcript = f"$ {command}\n{proc.stdout}{proc.stderr}"
    assert proc.returncode == 0, transcript
    return transcript


def _github_steps(repo: Path) -> tuple[dict[str, Any], list[str]]:
    """The install step and the `run:` of every other step, in order."""
    workflow = yaml.safe_load((repo / ".github/workflows/pep.yml").read_text())
    (job,) = workflow["jobs"].values()
    runs = [s for s in job["steps"] if "run" in s]
    installs = [s for s in runs if s.get("name") == INSTALL_STEP]
    assert len(installs) == 1
    others = [s["run"] for s in runs if s.get("name") != INSTALL_STEP]
    assert not any("pip install" in r for r in others)  # the install step is the only one with the network
    return installs[0], others


def _gitlab_job(repo: Path) -> dict[str, Any]:
    (job,) = yaml.safe_load((repo / ".gitlab-ci.yml").read_text()).values()
    assert not any("pip install" in line for line in job["script"])
    return job


def test_the_github_workflow_steps_pass_in_a_fresh_repository(repo: Path) -> None:
    install, runs = _github_steps(repo)
    assert install["run"].strip() == f'python -m pip install "pep=={_version()}"'
    assert [r.split()[:2] for r in runs[:3]] == [["pep", "validate"], ["pep", "fmt"], ["pep", "test"]]
    bash = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]  # GitHub's `run:` shell on Linux
    transcript = "".join(_run(repo, bash, r) for r in runs)
    print(transcript)  # the CI run, for whoever reads `pytest -s`
    assert "ok: 2 policies" in transcript and "7 passed, 0 failed" in transcript
    assert "replay skipped" in transcript
    suites = ET.parse(repo / "pep-junit.xml").getroot()
    assert len(list(suites.iter("testcase"))) == 7
    assert _git(repo, "status", "--porcelain") == ""  # CI changed nothing; its report is ignored

    (repo / "decision-logs").mkdir()
    (repo / "decision-logs" / "sample.log").write_text(SKIPPED_SAMPLE)
    replayed = _run(repo, bash, runs[-1])
    assert "replayed 0 of 1 decisions" in replayed and "skipped 1: token_invalid 1" in replayed


def test_the_replay_step_fails_ci_once_a_change_flips_a_logged_decision(
    repo: Path, harness_factory: Callable[..., Harness]
) -> None:
    """A real sample: decisions a pep serving the repository logged. Replayed unchanged: the step
    passes; after an edit that takes away the owner's access: the step fails, naming the decision."""
    (repo / "entities.json").write_text(
        json.dumps(
            [
                {
                    "uid": {"type": "Document", "id": "plans/roadmap.md"},
                    "attrs": {
                        "owner": {"__entity": {"type": "User", "id": "alice"}},
                        "readers": [{"__entity": {"type": "User", "id": "bob"}}],
                    },
                    "parents": [],
                }
            ]
        )
    )
    pep = harness_factory(policies=repo)
    for user, reason in (("alice", "allowed"), ("bob", "allowed"), ("carol", "policy_no_permit")):
        token = pep.token(sub=user, act_chain=("assistant",), scopes=["documents:read"])
        answer = pep.authorize(token, action="read_document", resource=("Document", "plans/roadmap.md"))
        assert answer.reason == reason, answer
    lines = pep.log_lines(wait_for=3)
    assert len(lines) == 3
    (repo / "decision-logs").mkdir()
    shutil.copy(pep.log_path, repo / "decision-logs" / "sample.log")
    _, runs = _github_steps(repo)
    bash = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
    replayed = _run(repo, bash, runs[-1])
    print(replayed)
    assert "replayed 3 of 3 decisions" in replayed

    policy = repo / "documents.cedar"
    policy.write_text(policy.read_text().replace("resource.owner == context.on_behalf_of ||", "", 1))
    proc = subprocess.run([*bash, runs[-1]], cwd=repo, env=_env(), capture_output=True, text=True, timeout=120)
    print(f"$ {runs[-1]}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ": 1 changed" in proc.stdout
    assert "allow (allowed) [documents.read.for-readers] -> deny (policy_no_permit)" in proc.stdout


def test_the_gitlab_job_script_passes_in_a_fresh_repository(repo: Path) -> None:
    job = _gitlab_job(repo)
    assert [line.strip() for line in job["before_script"]] == [f'python -m pip install "pep=={_version()}"']
    assert job["artifacts"]["reports"]["junit"] == "pep-junit.xml"
    transcript = "".join(_run(repo, ["sh", "-c"], line) for line in job["script"])  # any image's shell
    assert "7 passed, 0 failed" in transcript and "replay skipped" in transcript
    assert (repo / "pep-junit.xml").is_file()
    (repo / "decision-logs").mkdir()
    (repo / "decision-logs" / "sample.log").write_text(SKIPPED_SAMPLE)
    assert "replayed 0 of 1 decisions" in _run(repo, ["sh", "-c"], job["script"][-1])


def test_the_generated_tree_validates_formats_and_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(repo)]) == 0
    assert main(["fmt", "--check", str(repo)]) == 0
    assert main(["test", str(repo)]) == 0
    assert main(["test", str(repo), "--coverage", "--min-coverage", "100"]) == 0  # every policy decides a case
    out = capsys.readouterr().out
    assert "7 passed, 0 failed" in out
    assert "warning" not in out
    listed = set(_git(repo, "ls-files").split())
    assert {
        "schema.cedarschema",
        "agents.yaml",
        "documents.cedar",
        "delegation.cedar",
        "tests/documents.yaml",
        "README.md",
        ".github/workflows/pep.yml",
        ".gitlab-ci.yml",
        ".gitignore",
    } <= listed
    assert '@id("documents.read.for-readers")' in (repo / "documents.cedar").read_text()


def test_the_generated_readme_commands_run(repo: Path) -> None:
    readme = (repo / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    transcript = _run(repo, ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"], block)
    assert "decision: allow" in transcript and "7 passed, 0 failed" in transcript
    assert f"rev: v{_version()}" in readme


def test_install_takes_a_git_url_exactly_as_given(tmp_path: Path) -> None:
    spec = "pep @ git+https://git.example.com/pep.git@v0.1.0#egg=pep"
    assert main(["init", str(tmp_path / "r"), "--install", spec]) == 0
    install, _ = _github_steps(tmp_path / "r")
    assert install["run"].strip() == f'python -m pip install "{spec}"'
    assert _gitlab_job(tmp_path / "r")["before_script"][0].strip() == f'python -m pip install "{spec}"'


def test_this_repositorys_pre_commit_hooks_pass_on_the_generated_repository(repo: Path) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["pep-validate", "pep-fmt", "pep-test"]
    for hook in hooks:
        assert hook["language"] == "python" and hook["pass_filenames"] is False
        assert hook["entry"].split()[0] == "pep" and hook["name"] and hook["description"]
        command = " ".join([hook["entry"], *hook.get("args", [])])
        _run(repo, ["sh", "-c"], command)  # as pre-commit runs it: from the repository's root, no filenames
    assert _git(repo, "status", "--porcelain") == ""  # pep-fmt found nothing to change


def test_an_empty_directory_or_one_holding_only_git_is_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["init", str(tmp_path / "empty")]) == 0
    (tmp_path / "clone" / ".git").mkdir(parents=True)
    assert main(["init", str(tmp_path / "clone")]) == 0
    assert (tmp_path / "clone" / "schema.cedarschema").is_file()


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}: not empty (notes.txt)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "f").write_text("")
    assert main(["init", str(tmp_path / "f")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ['pep"; rm -rf ~; echo "', "pep\nmalicious: true", "$(id)", "pep==1 \\", ""])
def test_an_install_requirement_a_shell_or_yaml_could_misread_is_refused(
    tmp_path: Path, spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "r"), "--install", spec]) == 2
    assert "--install" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_help_describes_init_and_its_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pep", "init", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("usage: pep init") and "--install" in out and ".gitlab-ci.yml" in out


def _version() -> str:
    import pep

    return pep.__version__
