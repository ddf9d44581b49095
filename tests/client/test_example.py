"""examples/guarded_tools.py runs as documented, against a pep serving ./policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pep.config import parse_config
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.server import build_server

ROOT = Path(__file__).resolve().parents[2]


def test_guarded_tools_example(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    _, jwks = devtoken.ensure_dev_keys(str(dev))
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "admin_listen": "",
            "policies": str(ROOT / "policies"),
            "issuers": [{"issuer": "https://dev.pep.local", "audiences": ["pep"], "jwks_file": jwks}],
            "decision_log": {"sink": str(tmp_path / "decisions.log")},
        }
    )
    server = build_server(config, metrics=Metrics(process=False), max_workers=4)
    try:
        env = {**os.environ, "PEP_ADDRESS": server.addresses[0], "PEP_DEV_DIR": str(dev)}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "guarded_tools.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.stop(0)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "read_file(finance/reports/q3-forecast.xlsx): <contents of finance/reports/q3-forecast.xlsx>"
    assert lines[1].startswith("read_file(engineering/design-doc.md): denied (policy_no_permit, decision ")
    assert lines[2] == "async fetch(company/handbook.pdf): <contents of company/handbook.pdf>"
    assert lines[3] == "async fetch(engineering/design-doc.md): denied (policy_no_permit)"
    assert lines[4] == "pep unreachable: denied (internal_error, gRPC UNAVAILABLE)"
