"""The Node load generator (bench/node/loadgen.js) and the npm packages make bench uses.

`npm ci` installs bench/node/package-lock.json into .pep/bench/node (gitignored) on first use:
@grpc/grpc-js (the load generator's --client grpc-js; its default client is Node's own http2)
and, unless --skip-cerbos, the optional @cerbos/cerbos-linux-x64 (the Cerbos binary). A stamp
keeps the install until package.json or the lockfile changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CLIENT_CPU, ROOT, pinned, progress

SOURCE = ROOT / "bench" / "node"
CACHE = ROOT / ".pep" / "bench" / "node"
CERBOS = CACHE / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
NO_NPM = (
    "make bench needs Node.js (18 or later) and npm for its load generator, bench/node/loadgen.js:\n"
    "  install them (Debian/Ubuntu: apt-get install nodejs npm; or https://nodejs.org), then rerun.\n"
    "  npm installs @grpc/grpc-js (and the Cerbos binary) into .pep/bench/node on first use."
)


def ensure(cerbos: bool) -> Path | None:
    """Install what is missing; the Cerbos binary's path when cerbos, else None."""
    if not (shutil.which("node") and shutil.which("npm")):
        raise SystemExit(NO_NPM)
    if cerbos and (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise SystemExit("the Cerbos comparison uses @cerbos/cerbos-linux-x64 (Linux x86-64 only): add --skip-cerbos")
    files = ("package.json", "package-lock.json")
    digest = hashlib.sha256(b"".join((SOURCE / f).read_bytes() for f in files)).hexdigest()
    stamp = CACHE / ".installed"
    have = stamp.read_text().split() if stamp.exists() else []
    if not have or have[0] != digest or (cerbos and "cerbos" not in have):
        progress(f"npm ci into {CACHE.relative_to(ROOT)} (first use)")
        CACHE.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(SOURCE / f, CACHE / f)
        argv = ["npm", "ci", "--prefix", str(CACHE), "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run([*argv, *([] if cerbos else ["--omit=optional"])], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"npm ci failed (exit {done.returncode}):\n{done.stderr.strip()}")
        stamp.write_text(digest + (" cerbos" if cerbos else ""))
    if cerbos and not os.access(CERBOS, os.X_OK):
        raise SystemExit(f"{CERBOS} is missing after npm ci; remove {CACHE} and rerun, or add --skip-cerbos")
    return CERBOS if cerbos else None


def load(
    address: str,
    path: str,
    requests_file: Path,
    *,
    mode: str,
    seconds: float,
    concurrency: int,
    rate: float = 1000,
    per_call: int = 1,
    unique: str = "",
    client: str = "http2",
    warmup_passes: int = 0,
    mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One loadgen run, pinned to the client core: its JSON line. warmup_passes: whole passes over
    the request file before measuring (besides the usual half second). mark: called with
    "measuring" and "measured" as the measured phase starts and ends."""
    argv = ["node", str(SOURCE / "loadgen.js"), "--target", address, "--path", path, "--requests", str(requests_file)]
    argv += ["--mode", mode, "--seconds", str(seconds), "--concurrency", str(concurrency), "--rate", str(rate)]
    argv += ["--per-call", str(per_call), "--client", client, *(["--unique", unique] if unique else [])]
    argv += ["--warmup-passes", str(warmup_passes)]
    env = {**os.environ, "NODE_PATH": str(CACHE / "node_modules")}
    proc = subprocess.Popen(
        pinned(CLIENT_CPU, argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stderr is not None and proc.stdout is not None
    errors = []
    for line in proc.stderr:  # the measured phase's start and end, as the load generator marks them
        if line.startswith("loadgen: measur") and mark is not None:
            mark(line.split()[-1])
        else:
            errors.append(line)
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"loadgen failed (exit {proc.returncode}): {''.join(errors).strip()}")
    return dict(json.loads(out.strip().splitlines()[-1]))
