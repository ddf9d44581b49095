"""The files of a policy directory: their names, which `.cedar` files are live, and one
consistent read of them all with its content version."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from pep.errors import PolicyLoadError, SourceProblem

SCHEMA_FILE = "schema.cedarschema"
ENTITIES_FILE = "entities.json"
AGENTS_FILE = "agents.yaml"
LINKS_FILE = "links.yaml"
KILLSWITCH_FILE = "killswitch.yaml"
LIMITS_FILE = "limits.yaml"
KNOWN_FILES = (SCHEMA_FILE, ENTITIES_FILE, AGENTS_FILE, LINKS_FILE, KILLSWITCH_FILE, LIMITS_FILE)
SHADOW_DIR = "shadow"
# Folders whose .cedar files are not part of the live set.
NON_LIVE_DIRS = ("shadow", "tests")


def policy_files(directory: str, subdir: str | None = None) -> list[str]:
    """`.cedar` files relative to `directory`, sorted; hidden entries are skipped.

    With no `subdir`, the live set (everything outside shadow/ and tests/); with
    `subdir="shadow"`, the shadow set. Skipping `..*` and `.*` entries keeps a ConfigMap
    mount's `..data` and timestamped folders from being loaded twice beside the visible
    symlinks.
    """
    out = []
    top = os.path.join(directory, subdir) if subdir else directory
    if not os.path.isdir(top):
        return []
    for root, dirs, files in os.walk(top, followlinks=True):
        rel_root = os.path.relpath(root, directory)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if rel_root == "." and subdir is None:
            dirs[:] = [d for d in dirs if d not in NON_LIVE_DIRS]
        for name in sorted(files):
            if name.endswith(".cedar") and not name.startswith("."):
                out.append(os.path.normpath(os.path.join(rel_root, name)))
    return sorted(out)


def _read(directory: str, rel: str) -> str | None:
    path = os.path.join(directory, rel)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyLoadError([SourceProblem(rel, f"cannot read: {e}")]) from None


def resolve_base(directory: str) -> str:
    """The real folder to read one consistent version from.

    git-sync swaps a symlink to the whole tree, and a ConfigMap mount swaps its `..data`
    symlink; resolving once before reading means a swap mid-load cannot mix versions.
    """
    data = os.path.join(directory, "..data")
    if os.path.islink(data):
        return os.path.realpath(data)
    return os.path.realpath(directory)


@dataclass(frozen=True)
class Sources:
    live: dict[str, str]
    shadow: dict[str, str]
    # Each of KNOWN_FILES: its text, or None when absent.
    others: dict[str, str | None]
    version: str


def read_sources(directory: str) -> Sources:
    """Every file a snapshot is built from, read from one resolved base, and their version."""
    base = resolve_base(directory)
    if not os.path.isdir(base):
        raise PolicyLoadError([SourceProblem(directory, "policy directory does not exist")])
    digest = hashlib.sha256()

    def read(rel: str) -> str | None:
        text = _read(base, rel)
        if text is not None:
            digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        return text

    live = {rel: read(rel) or "" for rel in policy_files(base)}
    shadow = {rel: read(rel) or "" for rel in policy_files(base, SHADOW_DIR)}
    others = {rel: read(rel) for rel in KNOWN_FILES}
    return Sources(live, shadow, others, digest.hexdigest()[:16])


def content_version(directory: str) -> str | None:
    """The version `load_snapshot` would give the directory now, without parsing; None if unreadable."""
    try:
        return read_sources(directory).version
    except PolicyLoadError:
        return None
