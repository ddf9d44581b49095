"""Required mode loses nothing in a crash: SIGKILL under load, and every allow a client was
given is in the log. A real `pep serve` process, 16 gRPC clients, repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.audit.chain import verify
from pep.dev import tokens as devtoken
from tests.harness.estate import write_estate
from tests.harness.waits import free_port

ISSUER, AUDIENCE = "https://idp.test", "pep-test"
CLIENTS = 16
# Allows to collect before the kill; a loaded machine only makes a trial slower.
ALLOWS_BEFORE_KILL = int(os.environ.get("PEP_TEST_CRASH_ALLOWS", "300"))
DEADLINE_S = float(os.environ.get("PEP_TEST_CRASH_DEADLINE", "120"))


def _serve(root: Path, decision_log: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str, str]:
    key, jwks = devtoken.ensure_dev_keys(str(root / "keys"))
    listen = f"127.0.0.1:{free_port()}"
    config = {
        "listen": listen,
        "metrics_listen": "",
        "admin_listen": "",
        "policies": str(root / "policies"),
        "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"]}],
        "decision_log": decision_log,
    }
    (root / "pep.yaml").write_text(json.dumps(config))
    argv = [sys.executable, "-m", "pep", "serve", "--config", str(root / "pep.yaml"), "--log-level", "WARNING"]
    proc = subprocess.Popen(argv, stderr=open(root / "stderr.log", "wb"))
    return proc, listen, key


def _trial(root: Path, decision_log: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(decision ids of the allows the clients received, decision ids in the log after the kill)."""
    root.mkdir()
    write_estate(root / "policies")
    proc, listen, key = _serve(root, decision_log)
    received: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    try:
        channel = grpc.insecure_channel(listen)
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.AuthorizerStub(channel)
        token = devtoken.mint_token(key, issuer=ISSUER, audience=AUDIENCE, sub="alice", act_chain=["worker"])
        request = pb.AuthorizeRequest(token=token, action="read", resource=pb.Resource(type="Doc", id="plan"))
        assert stub.Authorize(request, timeout=30).decision == pb.DECISION_ALLOW

        def client() -> None:
            while not stop.is_set():
                try:
                    answer = stub.Authorize(request, timeout=30)
                except grpc.RpcError:
                    return  # the server is gone
                if answer.decision == pb.DECISION_ALLOW:
                    with lock:
                        received.add(answer.decision_id)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + DEADLINE_S
        while len(received) < ALLOWS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-load: answers and writes in flight
        proc.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    log = root / "decisions.log"
    logged = {json.loads(line)["decision_id"] for line in log.read_bytes().splitlines() if line.strip()}
    return received, logged


@pytest.mark.parametrize("sync", ["write", "fsync"])
def test_sigkill_under_load_loses_no_allow_in_required_mode(tmp_path: Path, sync: str) -> None:
    trials = 3 if sync == "write" else 1
    for n in range(trials):
        root = tmp_path / f"trial{n}"
        received, logged = _trial(root, {"sink": str(root / "decisions.log"), "required": True, "sync": sync})
        assert len(received) >= min(ALLOWS_BEFORE_KILL, 50), "the load never got going"
        missing = received - logged
        assert not missing, f"trial {n}: {len(missing)} of {len(received)} allows answered but not logged"


def test_a_chained_log_stays_intact_through_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "chained"
    log = root / "decisions.log"
    received, logged = _trial(root, {"sink": str(log), "required": True, "chain": True})
    assert received <= logged
    verdict = verify([str(log)])
    assert verdict.intact, verdict.text()
    assert verdict.entries == len(logged)
