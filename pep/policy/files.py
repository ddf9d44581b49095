"""The files of a policy directory: their names, which `.cedar` files are live, and one
consistent read of them all with its content version."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field

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
# What one load reads at most: per file, and in all (docs/policy-directory.md, "Limits").
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_DIRECTORY_BYTES = 128 * 1024 * 1024


def policy_files(directory: str, subdir: str | None = None, problems: list[SourceProblem] | None = None) -> list[str]:
    """`.cedar` files relative to `directory`, sorted; hidden entries are skipped.

    With no `subdir`, the live set (everything outside shadow/ and tests/); with
    `subdir="shadow"`, the shadow set. Skipping `..*` and `.*` entries keeps a ConfigMap
    mount's `..data` and timestamped folders from being loaded twice beside the visible
    symlinks. A folder that cannot be listed, or a symlink back into the tree, is added to
    `problems`: never silently skipped, never walked forever.
    """
    top = os.path.join(directory, subdir) if subdir else directory
    if not os.path.isdir(top):
        return []
    return walk_cedar(directory, top, skip=NON_LIVE_DIRS if subdir is None else (), problems=problems)


def walk_cedar(
    directory: str, top: str, *, skip: tuple[str, ...] = (), problems: list[SourceProblem] | None = None
) -> list[str]:
    """Every `.cedar` file under `top`, relative to `directory`, sorted, leaving out the folders
    in `skip` at the top level. Symlinked folders are followed, each real folder once."""
    out: list[str] = []
    found = problems if problems is not None else []

    def unreadable(e: OSError) -> None:
        rel = os.path.relpath(e.filename, directory) if e.filename else "."
        found.append(SourceProblem(rel, f"cannot list this folder: {e.strerror or e}"))

    seen = {os.path.realpath(top): "."}
    for root, dirs, files in os.walk(top, followlinks=True, onerror=unreadable):
        rel_root = os.path.relpath(root, directory)
        keep = []
        for d in sorted(dirs):
            if d.startswith(".") or (root == top and d in skip):
                continue
            real = os.path.realpath(os.path.join(root, d))
            rel = os.path.normpath(os.path.join(rel_root, d))
            if real in seen:
                inside = os.path.realpath(root) + os.sep
                loop = inside.startswith(real.rstrip(os.sep) + os.sep)
                why = "symlink loop: a folder that contains it" if loop else f"the same folder as {seen[real]}"
                found.append(SourceProblem(rel, f"{why}; each folder is read once"))
                continue
            seen[real] = rel
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            if name.endswith(".cedar") and not name.startswith("."):
                out.append(os.path.normpath(os.path.join(rel_root, name)))
    return sorted(out)


def read_file(directory: str, rel: str, limit: int = MAX_FILE_BYTES) -> tuple[str | None, SourceProblem | None]:
    """One file's text (None when absent), or the problem that keeps it from being read.

    Only regular files are read (opening a FIFO would stall the reload forever), at most
    `limit` bytes, and only as UTF-8; every refusal names the file (and the line of a bad byte).
    """
    path = os.path.join(directory, rel)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if os.path.lexists(path):
            return None, SourceProblem(rel, "is a symlink to a file that does not exist")
        return None, None
    except OSError as e:
        return None, SourceProblem(rel, f"cannot read: {_why(e)}")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return None, SourceProblem(rel, "is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            return None, SourceProblem(rel, "is not a regular file")
        if info.st_size > limit:
            return None, SourceProblem(rel, f"is {info.st_size:,} bytes, over the limit of {limit:,}")
        chunks, size = [], 0
        while size <= limit:  # the file may grow while it is read
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        return None, SourceProblem(rel, f"cannot read: {_why(e)}")
    finally:
        os.close(fd)
    if len(data) > limit:
        return None, SourceProblem(rel, f"is over the limit of {limit:,} bytes")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return None, SourceProblem(rel, f"not UTF-8: byte 0x{data[e.start]:02x} cannot be decoded", line, col)


def _why(e: OSError) -> str:
    return "symlink loop" if e.errno == errno.ELOOP else (e.strerror or str(e))


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
    # Each of KNOWN_FILES: its text, or None when absent or unreadable (then in `problems`).
    others: dict[str, str | None]
    version: str
    # Files and folders that could not be read: a load with any fails.
    problems: list[SourceProblem] = field(default_factory=list)


def read_sources(directory: str) -> Sources:
    """Every file a snapshot is built from, read from one resolved base, and their version.

    Raises PolicyLoadError only when the directory itself cannot be opened. A file that
    cannot be read is in `problems` and in the version, so the same broken content is
    recognised, and not tried again, until it changes.
    """
    base = resolve_base(directory)
    try:
        is_dir = stat.S_ISDIR(os.stat(base).st_mode)
    except FileNotFoundError:
        raise PolicyLoadError([SourceProblem(directory, "policy directory does not exist")]) from None
    except OSError as e:
        raise PolicyLoadError([SourceProblem(directory, f"cannot open the policy directory: {_why(e)}")]) from None
    if not is_dir:
        raise PolicyLoadError([SourceProblem(directory, "the policy directory is not a directory")])
    digest = hashlib.sha256()
    problems: list[SourceProblem] = []
    total = 0

    def read(rel: str) -> str | None:
        nonlocal total
        if total > MAX_DIRECTORY_BYTES:
            return None
        text, problem = read_file(base, rel)
        if problem is not None:
            problems.append(problem)
            digest.update(b"!" + str(problem).encode() + b"\0")
        if text is None:
            return None
        data = text.encode()
        total += len(data)
        if total > MAX_DIRECTORY_BYTES:
            problems.append(SourceProblem(rel, f"the policy files add up to over {MAX_DIRECTORY_BYTES:,} bytes"))
            digest.update(b"!total\0")
            return None
        digest.update(rel.encode() + b"\0" + data + b"\0")
        return text

    live_files = policy_files(base, problems=problems)
    shadow_files = policy_files(base, SHADOW_DIR, problems=problems)
    for problem in problems:  # the folders' problems, before any file's
        digest.update(b"!" + str(problem).encode() + b"\0")
    live = {rel: read(rel) or "" for rel in live_files}
    shadow = {rel: read(rel) or "" for rel in shadow_files}
    others = {rel: read(rel) for rel in KNOWN_FILES}
    return Sources(live, shadow, others, digest.hexdigest()[:16], problems)


def content_version(directory: str) -> str | None:
    """The version `load_snapshot` would give the directory now, without parsing; None if unreadable."""
    try:
        return read_sources(directory).version
    except PolicyLoadError:
        return None
