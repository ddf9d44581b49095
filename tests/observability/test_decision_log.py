"""The decision log through a real server: fields, one line per decision under load, no
secrets, redaction, size rotation, required mode (failing sink, full queue) and the flush
on shutdown. Unit tests below cover the writer's retry and partial-write handling."""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.api.ingress import traceparent, valid_traceparent
from pep.audit.entry import REDACTED, log_entry, utc_timestamp
from pep.audit.log import DecisionLog
from pep.audit.sinks import FileSink
from pep.config import DecisionLogConfig
from pep.decision import Decision, TokenSummary
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.reasons import Reason
from tests.harness.decision_log import LOG_FIELDS
from tests.harness.server import Harness, request
from tests.harness.waits import metrics_text, wait_for

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
Factory = Callable[..., Harness]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def counter(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


# --- fields ------------------------------------------------------------------------------


def test_entry_has_the_documented_fields_and_a_schema_version(obs: Factory) -> None:
    h = obs()
    token = h.token(scopes=["docs:read"])
    r = h.stub.Authorize(request(token, request_id="req-1"), metadata=(("traceparent", TRACEPARENT),), timeout=10)
    denied = h.authorize(token, resource=("Doc", "keys"))
    h.server.stop(0)
    allow, deny = read_lines(h.log_path)
    assert LOG_FIELDS <= set(allow) and LOG_FIELDS <= set(deny)
    assert allow["schema"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", allow["ts"])
    assert (allow["decision_id"], deny["decision_id"]) == (r.decision_id, denied.decision_id)
    assert (allow["request_id"], allow["decision"], allow["reason"]) == ("req-1", "allow", "allowed")
    assert (deny["decision"], deny["reason"], deny["policies"]) == ("deny", "policy_forbid", ["no-secrets"])
    assert allow["policies"] == ["read-docs"] and allow["errors"] == []
    assert (allow["agent"], allow["on_behalf_of"], allow["delegation_chain"]) == ("worker", "alice", ["worker"])
    assert (allow["action"], allow["resource"]) == ("read", {"type": "Doc", "id": "plan"})
    assert allow["token"]["iss"] == "https://idp.test" and allow["token"]["scopes"] == ["docs:read"]
    assert allow["token"]["jti"] and allow["token"]["client_id"] == "worker"
    assert allow["binding"] == "bearer" and allow["mode"] == "enforce"
    assert allow["policy_version"] == r.policy_version
    assert isinstance(allow["duration_us"], int) and allow["duration_us"] >= 0
    assert allow["traceparent"] == TRACEPARENT and "traceparent" not in deny


@pytest.mark.parametrize("ts", [0.0, 1.5, 1795883129.696289, 1795883129.9999996, 4102444799.000001])
def test_timestamps_are_rfc3339_utc_with_microseconds(ts: float) -> None:
    expected = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert utc_timestamp(ts) == expected


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (TRACEPARENT, TRACEPARENT),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", ""),  # uppercase
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""),  # zero parent id
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""),  # forbidden version
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", ""),  # short trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ""),  # v00 has 4 fields
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", TRACEPARENT.replace("00-", "01-", 1)),
        ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", ""),
        ("<script>alert(1)</script>", ""),
        ("", ""),
    ],
)
def test_traceparent_is_kept_only_when_well_formed(value: str, kept: str) -> None:
    assert valid_traceparent(value) == kept
    # Checked once, where the request comes in; the log writes what it is handed.
    assert traceparent(value) == kept
    entry = log_entry(Decision("id", True, Reason.ALLOWED, True, traceparent=traceparent(value)))
    assert entry.get("traceparent", "") == kept


def test_invalid_traceparent_from_grpc_is_not_logged(obs: Factory) -> None:
    h = obs()
    bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nforged"
    h.stub.Authorize(request(h.token()), metadata=(("traceparent", "zz-garbage"),), timeout=10)
    h.stub.Authorize(request(h.token()), metadata=(("traceparent", bad[:55] + "x"),), timeout=10)
    h.server.stop(0)
    assert [line.get("traceparent") for line in read_lines(h.log_path)] == [None, None]


# --- one line per decision ---------------------------------------------------------------


def test_one_line_per_decision_under_concurrent_load(obs: Factory) -> None:
    h = obs()
    threads, calls = 8, 40
    tokens = [h.token(act_chain=("worker",)) for _ in range(threads)]

    def client(i: int) -> list[str]:
        ids = []
        for n in range(calls):
            kind = n % 4
            token = "garbage" if kind == 3 else tokens[i]
            resource = ("Doc", "keys") if kind == 2 else ("Doc", "plan")
            ids.append(h.authorize(token, resource=resource, request_id=f"{i}-{n}").decision_id)
        return ids

    with ThreadPoolExecutor(threads) as pool:
        answered = [d for ids in pool.map(client, range(threads)) for d in ids]
    doc = pb.Resource(type="Doc", id="plan")
    checks = [pb.Check(action="read", resource=doc, request_id=f"b{i}") for i in range(5)]
    batch = h.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(token=tokens[0], checks=checks), timeout=10)
    answered += [r.decision_id for r in batch.responses]  # a batch: one line per check
    h.server.stop(0)
    lines = read_lines(h.log_path)
    assert len(lines) == len(answered) == threads * calls + 5
    assert sorted(line["decision_id"] for line in lines) == sorted(answered)
    assert len(set(answered)) == len(answered)
    assert h.server.metrics.registry.get_sample_value("pep_decision_log_dropped_total") == 0


def test_lines_are_written_before_stop_returns(obs: Factory) -> None:
    h = obs()
    token = h.token()
    batch = pb.AuthorizeBatchRequest(
        token=token, checks=[pb.Check(action="read", resource=pb.Resource(type="Doc", id="plan"))] * 300
    )
    for _ in range(3):
        h.stub.AuthorizeBatch(batch, timeout=10)
    h.server.stop(0)  # no waiting after this: the writer must have drained the queue
    assert len(h.log_path.read_text().splitlines()) == 900


# --- secrets and redaction ---------------------------------------------------------------


def _segments(jws: str) -> list[str]:
    return jws.split(".")


def test_no_token_proof_or_key_material_in_the_log(obs: Factory) -> None:
    h = obs()
    key, jwk = devtoken.new_dpop_key()
    uri = "https://pep.test/pep.v1.Authorizer/Authorize"
    bound = h.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    proofs = [devtoken.mint_dpop_proof(key, jwk, htm="POST", htu=uri, access_token=bound) for _ in range(2)]
    bearer = h.token(scopes=["docs:read"])
    head, body, sig = _segments(h.token())
    other_sig = _segments(h.token(sub="mallory"))[2]
    forged = f"{head}.{body}.{other_sig}"  # a well-formed signature, of another token
    answers = [
        h.authorize("DPoP " + bound, dpop_proof=proofs[0], http_method="POST", http_uri=uri).reason,
        h.authorize("DPoP " + bound, dpop_proof=proofs[0], http_method="POST", http_uri=uri).reason,  # replay
        h.authorize("DPoP " + bound, dpop_proof=proofs[1], http_method="GET", http_uri=uri).reason,
        h.authorize(bearer).reason,
        h.authorize(forged).reason,
        h.authorize(f"{head}.{body}").reason,
    ]
    assert answers == [
        "allowed",
        "dpop_replay",
        "dpop_proof_invalid",
        "allowed",
        "token_signature_invalid",
        "token_malformed",
    ]
    h.server.stop(0)
    raw = h.log_path.read_text()
    assert len(raw.splitlines()) == len(answers)
    secrets = [bound, bearer, forged, *proofs, *_segments(bound), *_segments(bearer), sig, other_sig]
    secrets += [s for p in proofs for s in _segments(p)]
    d = key.private_numbers().private_value.to_bytes(32, "big")
    secrets.append(base64.urlsafe_b64encode(d).rstrip(b"=").decode())
    leaked = [s[:20] for s in secrets if s in raw]
    assert not leaked
    # Not even a recognisable prefix of a JWS (`eyJ` is base64 of `{"`).
    assert "eyJ" not in raw


def test_redacted_claims_never_reach_the_log(obs: Factory, tmp_path: Path) -> None:
    h = obs(decision_log={"sink": str(tmp_path / "redacted.log"), "redact_claims": ["sub", "jti", "email"]})
    user, email = "alice-0c7f1e", "alice@secret.example"
    token = h.token(sub=user, extra_claims={"email": email})
    assert h.authorize(token).reason == "allowed"
    loner = h.token(sub=user, act_chain=("loner",))
    denied = h.authorize(loner)  # the error names the user: User::"alice-0c7f1e" may not delegate...
    assert denied.reason == "chain_delegation_forbidden" and user in denied.errors[0]
    h.server.stop(0)
    raw = h.log_path.read_text()
    allow, deny = read_lines(h.log_path)
    assert (allow["on_behalf_of"], allow["token"]["jti"]) == (REDACTED, REDACTED)
    assert allow["agent"] == "worker" and allow["token"]["iss"] == "https://idp.test"
    assert REDACTED in deny["errors"][0]
    assert user not in raw and email not in raw


# --- rotation ----------------------------------------------------------------------------


def test_file_is_rotated_by_size_with_backups(obs: Factory, tmp_path: Path) -> None:
    log_path = tmp_path / "rotated" / "decisions.log"
    h = obs(decision_log={"sink": str(log_path), "max_bytes": 4096, "backups": 2})
    token = h.token()
    ids = [h.authorize(token).decision_id for _ in range(40)]
    h.server.stop(0)
    files = sorted(p.name for p in log_path.parent.iterdir())
    assert files == ["decisions.log", "decisions.log.1", "decisions.log.2"]
    kept: list[dict[str, Any]] = []
    for name in ("decisions.log.2", "decisions.log.1", "decisions.log"):
        path = log_path.parent / name
        assert 0 < path.stat().st_size <= 4096
        kept += read_lines(path)
    # The newest decisions, in order, without a gap: rotation loses only the oldest files.
    assert [line["decision_id"] for line in kept] == ids[-len(kept) :]


def test_rotation_without_backups_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    sink = FileSink(str(path), max_bytes=100, backups=0)
    sink.write(deque(f'{{"n":{i:03}}}\n'.encode() for i in range(25)))  # 10 bytes a line
    sink.close()
    assert path.read_text().splitlines() == [f'{{"n":{i:03}}}' for i in range(20, 25)]
    assert list(tmp_path.iterdir()) == [path]


# --- required mode and failing sinks -----------------------------------------------------


def test_required_mode_refuses_allows_while_the_sink_fails(obs: Factory) -> None:
    h = obs(decision_log={"sink": "/dev/full", "required": True})
    token = h.token()
    # The writer learns the sink fails on its first write; from then on nothing is queued.
    assert wait_for(lambda: h.authorize(token).reason == "internal_error", timeout=10)
    for _ in range(10):
        r = h.authorize(token)
        assert (r.decision, r.reason) == (DENY, "internal_error")
        assert "decision log unavailable" in r.errors
    forbidden = h.authorize(token, resource=("Doc", "keys"))
    assert (forbidden.decision, forbidden.reason) == (DENY, "policy_forbid")  # a deny stays what it was
    text = metrics_text(h)
    assert counter(text, 'pep_decisions_total{action="read",decision="deny",reason="internal_error"}') >= 10
    assert counter(text, "pep_decision_log_dropped_total") >= 11


def test_default_mode_keeps_deciding_and_counts_drops_when_the_sink_fails(obs: Factory) -> None:
    h = obs(decision_log={"sink": "/dev/full"})
    token = h.token()
    assert all(h.authorize(token).reason == "allowed" for _ in range(20))
    assert wait_for(lambda: counter(metrics_text(h), "pep_decision_log_dropped_total") == 20)


def test_required_mode_refuses_when_the_queue_is_full_and_recovers(obs: Factory, tmp_path: Path) -> None:
    fifo = tmp_path / "decisions.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read (yet)
    got = bytearray()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                got.extend(os.read(reader, 65536))
            except BlockingIOError:
                time.sleep(0.005)

    drainer = threading.Thread(target=drain)
    try:
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)  # the writer blocks after a few lines
        h = obs(decision_log={"sink": str(fifo), "required": True, "queue_size": 4})
        token = h.token()
        answers: list[str] = []

        def ask() -> str:
            answers.append(h.authorize(token).reason)
            return answers[-1]

        assert wait_for(lambda: ask() == "internal_error", timeout=10), "the queue never filled"
        assert set(answers[:-1]) == {"allowed"} and len(answers) > 4
        assert ask() == "internal_error"
        drainer.start()  # the sink drains: the queue empties and allows come back
        assert wait_for(lambda: ask() == "allowed", timeout=10)
        h.server.stop(0)
        dropped = h.server.metrics.registry.get_sample_value("pep_decision_log_dropped_total")
    finally:
        stop.set()
        if drainer.is_alive():
            drainer.join()
        os.close(reader)
    lines = [json.loads(line) for line in got.decode().splitlines()]
    decisions = [line for line in lines if "event" not in line]
    # An allow whose caller gave up waiting (the sink blocked) is written as it was answered, or,
    # when its line was already on its way, followed by an `answered` event naming it.
    corrected = {i for line in lines if line.get("event") == "answered" for i in line["decision_ids"]}
    assert all(line["answered"] == "deny" and line["reason"] == "internal_error" for line in lines if "event" in line)
    allowed = [d for d in decisions if d["decision"] == "allow" and d["decision_id"] not in corrected]
    refused_logged = [d for d in decisions if d["reason"] == "internal_error"] + [
        d for d in decisions if d["decision_id"] in corrected
    ]
    # Every allow answered was logged, once; every refusal was either logged as refused or dropped.
    assert len(allowed) == answers.count("allowed")
    assert len({d["decision_id"] for d in decisions}) == len(decisions)
    assert {d["decision"] for d in decisions if d["reason"] != "internal_error"} == {"allow"}
    assert dropped is not None
    assert dropped + len(refused_logged) == answers.count("internal_error") >= 2


# --- writer unit tests -------------------------------------------------------------------


def dropped(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("pep_decision_log_dropped_total") or 0.0


def _decision(n: int) -> Decision:
    return Decision(f"d{n}", True, Reason.ALLOWED, True, action="read", token=TokenSummary(iss="i"), ts=1.0)


class FlakySink:
    """Fails the first `failures` writes, then keeps every line."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.lines: list[bytes] = []

    def write(self, lines: deque[bytes]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self.lines.extend(lines)
        lines.clear()

    def drop(self) -> int:
        return 0

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_required_mode_holds_what_it_took_and_writes_it_once_the_sink_recovers() -> None:
    metrics = Metrics(process=False)
    sink = FlakySink(failures=3)
    dlog = DecisionLog(DecisionLogConfig(required=True, queue_size=10), metrics, sink=sink)
    assert dlog.record(_decision(0))
    assert wait_for(lambda: not dlog.healthy or sink.lines != [], timeout=5)
    refused = [dlog.record(_decision(n)) for n in range(1, 4)]  # refused while failing (or queued if recovered)
    assert wait_for(lambda: dlog.healthy, timeout=5)
    assert dlog.record(_decision(9))
    dlog.close()
    ids = [json.loads(line)["decision_id"] for line in sink.lines]
    expected = ["d0"] + [f"d{n}" for n, ok in zip(range(1, 4), refused, strict=True) if ok] + ["d9"]
    assert ids == expected
    assert dropped(metrics) == refused.count(False)


def test_default_mode_drops_and_counts_what_a_failing_sink_loses() -> None:
    metrics = Metrics(process=False)
    sink = FlakySink(failures=1)
    dlog = DecisionLog(DecisionLogConfig(queue_size=10), metrics, sink=sink)
    assert dlog.record(_decision(0))
    assert wait_for(lambda: dropped(metrics) == 1, timeout=5)
    assert dlog.record(_decision(1))
    dlog.close()
    assert [json.loads(line)["decision_id"] for line in sink.lines] == ["d1"]


def test_a_write_cut_short_is_finished_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.log"
    sink = FileSink(str(path))
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:7]))  # a short write
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("pep.audit.sinks.os.write", flaky_write)
    lines = deque([b'{"n":1}\n', b'{"n":2}\n'])
    with pytest.raises(OSError):
        sink.write(lines)
    sink.reset()
    sink.write(lines)  # reopens and finishes the chunk
    sink.write(deque([b'{"n":3}\n']))
    sink.close()
    assert path.read_text() == '{"n":1}\n{"n":2}\n{"n":3}\n'


def test_a_chunk_dropped_half_written_does_not_glue_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.log"
    sink = FileSink(str(path))
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:4]))
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("pep.audit.sinks.os.write", flaky_write)
    with pytest.raises(OSError):
        sink.write(deque([b'{"n":1}\n', b'{"n":2}\n']))
    assert sink.drop() == 2
    sink.write(deque([b'{"n":3}\n']))
    sink.close()
    assert path.read_text().splitlines() == ['{"n"', '{"n":3}']


def test_a_sink_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    from pep.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"decision_log\.sink"):
        FileSink(str(blocker / "decisions.log"))


def test_closed_log_refuses_and_counts(tmp_path: Path) -> None:
    metrics = Metrics(process=False)
    dlog = DecisionLog(DecisionLogConfig(sink=str(tmp_path / "d.log")), metrics)
    dlog.close()
    assert not dlog.record(_decision(1))
    assert dropped(metrics) == 1


def test_grpc_error_still_logs_nothing_secret(obs: Factory) -> None:
    h = obs()
    token = h.token()
    with pytest.raises(grpc.RpcError):
        h.authorize(token, action="")  # INVALID_ARGUMENT: still one log line
    h.server.stop(0)
    (line,) = read_lines(h.log_path)
    assert line["reason"] == "invalid_request" and token.split(".")[2] not in h.log_path.read_text()
