"""`pep init DIR`: a new policy repository with CI that runs pep's checks."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import pep
from pep.cli.common import EXIT_OK
from pep.cli.inputs import UsageError, clip, utf8

# What `--install` may be: a pip requirement (`pep==0.1.0`, `pep @ git+https://...@v0.1.0`),
# never anything a shell or YAML would read as more than one argument.
_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+\-=<>!~@:/#?&%,\[\]]*")
_MAX_REQUIREMENT = 512


def add_parser(sub: Any) -> None:
    i = sub.add_parser(
        "init",
        help="start a policy repository: schema, agents, a first policy and suite, CI and a README",
        description="Write a new policy repository into DIR (created if missing; refused unless empty or "
        "holding only .git): schema.cedarschema, agents.yaml with one agent, a first policy with its "
        "delegation grant, a suite in tests/ that passes, a README.md, and CI for GitHub Actions "
        "(.github/workflows/pep.yml) and GitLab (.gitlab-ci.yml) that installs pep and runs pep validate, "
        "pep fmt --check, pep test --junit and, when decision-logs/*.log holds a sample, pep replay.",
    )
    i.add_argument("dir", help="the directory to create the repository in")
    i.add_argument(
        "--install",
        default=f"pep=={pep.__version__}",
        metavar="REQUIREMENT",
        help="what CI pip-installs pep from: a pinned version or a git URL such as "
        f"'pep @ git+https://git.example.com/pep.git@v{pep.__version__}' (default pep=={pep.__version__})",
    )
    i.set_defaults(func=cmd_init, command="pep init")


def cmd_init(args: argparse.Namespace) -> int:
    root = utf8(args.dir, "DIR")
    install = _requirement(args.install)
    if os.path.lexists(root):
        if not os.path.isdir(root):
            raise UsageError(f"{root}: exists and is not a directory")
        present = sorted(name for name in os.listdir(root) if name != ".git")
        if present:
            raise UsageError(
                f"{root}: not empty ({clip(', '.join(present), 120)}); pep init writes only into a new "
                "or empty directory"
            )
    from pep.dev.repo_template import files

    tree = files(install)
    os.makedirs(root, exist_ok=True)
    for rel, text in tree.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    for rel in tree:
        print(f"created {os.path.join(root, *rel.split('/'))}")
    print(f"next: cd {root} && git init && pep validate . && pep test .  (CI installs {install})")
    return EXIT_OK


def _requirement(value: str) -> str:
    utf8(value, "--install")
    if len(value) > _MAX_REQUIREMENT:
        raise UsageError(f"--install: at most {_MAX_REQUIREMENT} characters, got {len(value)}")
    if not _REQUIREMENT.fullmatch(value):
        raise UsageError(
            f"--install: {clip(value, 80)!r} is not a pip requirement (letters, digits, spaces and "
            ". _ + - = < > ! ~ @ : / # ? & % , [ ] only; no quotes, $ or backslashes)"
        )
    return value
