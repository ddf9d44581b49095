"""The architecture rules import-linter cannot express (README "Layout"): who reads the whole
`Config`, and how long a module may grow. The import layers themselves are `make lint`'s."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pep"
MAX_LINES = 400
# The composition root, the command line, the suite runner and the config package itself.
MAY_READ_CONFIG = ("pep/server.py", "pep/cli/", "pep/dev/suite.py", "pep/config/")


def _modules() -> list[Path]:
    generated = PACKAGE / "_proto"
    return sorted(p for p in PACKAGE.rglob("*.py") if generated not in p.parents)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an ImportFrom names, relative imports resolved against the importing file."""
    if not node.level:
        return node.module or ""
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _is_config_module(module: str) -> bool:
    return module == "pep.config" or module.startswith("pep.config.")


def _config_reads(source: str, path: Path) -> Iterator[str]:
    """Each place a module takes `Config` from pep.config: by name, or as an attribute of the module."""
    tree = ast.parse(source, filename=str(path))
    module_aliases: set[str] = set()  # local names bound to pep.config (or a module of it)
    dotted: set[str] = set()  # `import pep.config` makes `pep.config.Config` reachable
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, path)
            for alias in node.names:
                if _is_config_module(source) and alias.name == "Config":
                    yield f"line {node.lineno}: from {source} import Config"
                elif _is_config_module(f"{source}.{alias.name}"):
                    module_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_config_module(alias.name):
                    if alias.asname:
                        module_aliases.add(alias.asname)
                    else:
                        dotted.add(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "Config":
            owner = ast.unparse(node.value)
            if owner in module_aliases or owner in dotted:
                yield f"line {node.lineno}: {owner}.Config"


def test_only_the_edges_read_the_whole_config() -> None:
    offenders = {
        _name(path): reads
        for path in _modules()
        if not _name(path).startswith(MAY_READ_CONFIG) and (reads := list(_config_reads(path.read_text(), path)))
    }
    assert offenders == {}, "modules below the composition root take their section object, not Config"


def test_no_module_is_over_400_lines() -> None:
    long = {_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (at most {MAX_LINES} lines each)"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from pep.config import Config\n", True),
        ("from pep.config import DelegationConfig, Config as C\n", True),
        ("from pep.config.sections import Config\n", True),
        ("from ..config import Config\n", True),
        ("import pep.config\nx: pep.config.Config\n", True),
        ("import pep.config as cfg\nx: cfg.Config\n", True),
        ("from pep import config\nx: config.Config\n", True),
        ("from pep.config import DelegationConfig, ReloadConfig\n", False),
        ("from pep.configuration import Config\n", False),
        ("from other import Config\nx = other.Config\n", False),
    ],
)
def test_the_config_check_sees_every_spelling(source: str, found: bool) -> None:
    reads = list(_config_reads(source, PACKAGE / "pipeline" / "stage.py"))
    assert bool(reads) is found, reads
