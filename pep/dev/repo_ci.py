"""The CI files and README of the policy repository `pep init` writes.

Both CI files run the same checks, each one line: `pep validate .`, `pep fmt --check .`, `pep test .
--junit pep-junit.xml`, and `pep replay` against `decision-logs/*.log` when the repository holds
such a sample (a POSIX `if`, so it runs under GitHub's bash and any GitLab image's sh). The one step
that needs the network is the one that installs pep: named "Install pep" in the workflow, the
`before_script` in `.gitlab-ci.yml`.
"""

from __future__ import annotations

import pep

__all__ = ["INSTALL_STEP", "REPLAY", "ci_files"]

INSTALL_STEP = "Install pep"  # the workflow step's name; its `run:` is the only line that needs the network
REPLAY = (
    "if ls decision-logs/*.log >/dev/null 2>&1; then pep replay decision-logs/*.log --policies .; "
    'else echo "no decision-logs/*.log sample, replay skipped"; fi'
)

_WORKFLOW = """\
# pep checks every change to this policy repository (written by `pep init`).
name: pep

on:
  push:
  pull_request:

jobs:
  policies:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Install pep
        run: |
          python -m pip install "@INSTALL@"
      - name: Validate the policy directory
        run: pep validate .
      - name: Check the Cedar formatting
        run: pep fmt --check .
      - name: Run the policy test suites
        run: pep test . --junit pep-junit.xml
      - name: Replay the decision-log sample
        run: @REPLAY@
      - name: Keep the test report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: pep-junit
          path: pep-junit.xml
          if-no-files-found: ignore
"""

_GITLAB = """\
# pep checks every change to this policy repository (written by `pep init`).
pep:
  image: python:3.12-slim
  # Install pep: the only line that needs the network.
  before_script:
    - |
      python -m pip install "@INSTALL@"
  script:
    - pep validate .
    - pep fmt --check .
    - pep test . --junit pep-junit.xml
    - @REPLAY@
  artifacts:
    when: always
    reports:
      junit: pep-junit.xml
"""

_GITIGNORE = """\
# The test report CI writes (`pep test . --junit pep-junit.xml`).
pep-junit.xml
"""

_README = """\
# Policy repository

The authorization policies pep enforces for our agents. pep loads this whole directory
(`pep serve --policies DIR`); every change is checked by CI before it ships.

| file | what it holds |
|---|---|
| `schema.cedarschema` | the Cedar schema: entity types, the context pep builds, the actions |
| `agents.yaml` | the agent registry: every agent identity, its owner, status, groups |
| `*.cedar` | the policies, each with an `@id` (ids appear in decisions and the decision log) |
| `delegation.cedar` | delegation grants: which agents a user (or another agent) may put to work |
| `tests/*.yaml` | the policy test suites `pep test` runs |
| `decision-logs/*.log` | optional: a sample of pep's decision log that CI replays |

## Checking a change

```sh
pep validate .                     # parse and schema-validate everything: file:line:col: message
pep fmt .                          # format the .cedar files (CI runs pep fmt --check .)
pep test .                         # run the suites in tests/
pep test . --coverage              # and how many cases each policy decided
pep check --policies . --token-claims '{"sub": "alice", "act_chain": ["assistant"], "scopes": ["documents:read"]}' \\
  --action read_document --resource 'Document::"plans/roadmap.md"' \\
  --attributes '{"owner": {"__entity": {"type": "User", "id": "alice"}}}'   # one decision, explained
```

Every new policy comes with cases in `tests/`: a `token` case runs real token claims through
the whole pipeline (registry, delegation grants, then the policies); a `principal` case asks
Cedar directly.

## CI

`.github/workflows/pep.yml` (GitHub Actions) and `.gitlab-ci.yml` (GitLab CI) run the same
steps: install pep, `pep validate .`, `pep fmt --check .`, `pep test . --junit pep-junit.xml`
(the JUnit report is kept as an artifact), and, when `decision-logs/` holds a `*.log` sample,
`pep replay decision-logs/*.log --policies .`, which fails when a logged decision would come
out differently under the changed policies. Refresh the sample when a change is meant to
change decisions. Keep the file of the CI system you use and delete the other.

## Pre-commit

pep ships pre-commit hooks (`pep-validate`, `pep-fmt`, `pep-test`). In
`.pre-commit-config.yaml`, with `repo:` the git URL pep is installed from and `rev:` its tag:

```yaml
repos:
  - repo: https://git.example.com/pep.git
    rev: v@VERSION@
    hooks:
      - id: pep-validate
      - id: pep-fmt
      - id: pep-test
```
"""


def ci_files(install: str) -> dict[str, str]:
    """The CI files, the README and `.gitignore`, CI installing pep with `pip install "<install>"`."""

    def fill(text: str) -> str:
        return text.replace("@INSTALL@", install).replace("@REPLAY@", REPLAY)

    return {
        ".github/workflows/pep.yml": fill(_WORKFLOW),
        ".gitlab-ci.yml": fill(_GITLAB),
        ".gitignore": _GITIGNORE,
        "README.md": _README.replace("@VERSION@", pep.__version__),
    }
