"""The composition root: builds every component from config and runs the listeners."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pep._proto.pep.v1 import admin_pb2_grpc, authorizer_pb2
from pep.api.authzen_server import AuthzenServer
from pep.api.ext_authz import SERVICE_NAME as EXT_AUTHZ_SERVICE
from pep.api.ext_authz import ExtAuthzService
from pep.api.ext_authz import add_to_server as add_ext_authz
from pep.api.grpc_admin import AdminService, update_kill_gauge
from pep.api.grpc_authorizer import AuthorizerService
from pep.api.grpc_authorizer import add_to_server as add_authorizer
from pep.api.mcp_proxy import McpProxy
from pep.audit.entry import utc_timestamp
from pep.audit.log import DecisionLog
from pep.config import AnomalyConfig, Config, split_address
from pep.controls.admit import Controls
from pep.controls.anomaly import Detector
from pep.controls.containment import Containment
from pep.controls.killswitch import KillEntry, RuntimeKills, StoredKills
from pep.controls.ratelimit import RateLimiter
from pep.errors import ListenError
from pep.metrics import Metrics
from pep.pipeline import Pipeline
from pep.pipeline.memo import DecisionMemo
from pep.pipeline.record import Recorder
from pep.policy.revoked_file import revoke_kind
from pep.policy.store import PolicyStore
from pep.policy.watcher import PolicyWatcher
from pep.state import KillStore, open_kill_store, open_shared
from pep.state.nonce_secret import RedisNonceSecret
from pep.tokens.verifier import TokenVerifier

log = logging.getLogger(__name__)
# Memory is bounded by design (README, "Limits"): a message is at most MAX_MESSAGE_BYTES, and
# at most MAX_CONCURRENT_RPCS calls are in pep at once (more are answered RESOURCE_EXHAUSTED by
# gRPC itself). gRPC enables SO_REUSEPORT by default, which would let a second pep share a
# port and silently take part of its traffic: off, so a clash fails start-up instead.
MAX_MESSAGE_BYTES = 512 * 1024
MAX_CONCURRENT_RPCS = 32
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]
SERVICE_NAME = authorizer_pb2.DESCRIPTOR.services_by_name["Authorizer"].full_name


@dataclass
class Server:
    """A running pep: gRPC server, metrics endpoint, and the parts they share."""

    config: Config
    metrics: Metrics
    store: PolicyStore
    verifier: TokenVerifier
    decision_log: DecisionLog
    pipeline: Pipeline
    grpc_server: grpc.Server
    health: health.HealthServicer
    # Actual bound addresses (port 0 in config resolves to a real port).
    addresses: list[str] = field(default_factory=list)
    watcher: PolicyWatcher | None = None
    admin_server: grpc.Server | None = None
    admin_address: str = ""
    metrics_http: ThreadingHTTPServer | None = None
    metrics_address: str = ""
    authzen: AuthzenServer | None = None
    authzen_address: str = ""
    mcp: McpProxy | None = None
    mcp_address: str = ""
    draining: threading.Event = field(default_factory=threading.Event)
    # Where admin flips outlive the process (`state`); None: memory only.
    state: KillStore | None = None
    # What anomaly rules that fire do (`anomaly.rules`); None without rules.
    containment: Containment | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        # Not ready from the first moment of a drain: probes and dashboards see it.
        self.draining.set()
        self.metrics.ready.set(0)
        self.health.enter_graceful_shutdown()
        if self.watcher is not None:
            self.watcher.stop()
        if self.admin_server is not None:
            self.admin_server.stop(0)
        if self.authzen is not None:
            self.authzen.stop()
        if self.mcp is not None:
            self.mcp.stop()
        self.grpc_server.stop(grace).wait()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()
        if self.containment is not None:
            self.containment.close()  # its last events go to the log before the log closes
        if self.state is not None:
            self.state.close()
        self.decision_log.close()
        self.verifier.close()
        self._stopped.set()


def build_server(config: Config, *, metrics: Metrics | None = None, max_workers: int = 8) -> Server:
    """Build and start pep from a checked config. Raises ConfigError before any port opens."""
    metrics = metrics or Metrics()
    # May raise ConfigError. Every JWKS refresh counts in pep_jwks_refreshes_total.
    verifier = TokenVerifier(config.issuers, config.tokens, on_jwks_refresh=metrics.jwks_refreshed)
    store = PolicyStore(config.policies, metrics, require_schema=config.policies_require_schema)
    decision_log = DecisionLog(config.decision_log, metrics)
    state = open_kill_store(config.state, metrics)  # may raise ConfigError (an unreadable state.file)
    kills = StoredKills(state) if state is not None else RuntimeKills()
    containment, detector = _anomaly(config.anomaly, kills, decision_log, metrics)
    recorder = Recorder(
        decision_log, metrics, mode=config.mode, log_required=config.decision_log.required, anomaly=detector
    )
    # With Redis: buckets and proof jtis shared by the fleet, this process's kept as the fallback.
    buckets, replay = open_shared(config.state, metrics, verifier.local_replay)
    if replay is not None:
        verifier.use_replay(replay)
    if config.state.redis_url and any(i.dpop_nonce for i in config.issuers):  # one nonce secret for the fleet
        verifier.nonces.share(RedisNonceSecret(config.state.redis_url, config.state.key_prefix))
    controls = Controls(kills, RateLimiter(shared=buckets, on_unavailable=config.state.on_unavailable))
    memo = DecisionMemo(config.decision_memo_size, metrics.memo_looked_up) if config.decision_memo_size else None
    pipeline = Pipeline(
        store,
        verifier,
        controls,
        recorder,
        delegation=config.delegation,
        identity=config.identity,
        memo=memo,
        inputs_bytes=config.decision_log.max_inputs_bytes,
    )
    store.on_swap(lambda snapshot: update_kill_gauge(metrics, kills, snapshot))
    kills.on_change = _on_kill_change(metrics, kills, store, decision_log, detector)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pep-grpc"),
        options=GRPC_OPTIONS,
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    add_authorizer(AuthorizerService(pipeline), server)
    served = [SERVICE_NAME]
    if config.ext_authz.enabled:
        # Envoy's ext_authz filter asks the same core on the same port.
        ext = ExtAuthzService(pipeline, config.ext_authz, config.tokens.dpop_algorithms)
        add_ext_authz(ext, server)
        served.append(EXT_AUTHZ_SERVICE)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *served):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (*served, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )

    def serving(_snapshot: Any) -> None:
        for name in ("", *served):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    store.on_swap(serving)
    if not store.load():
        log.error("no valid policy set in %s: health is NOT_SERVING until one loads", config.policies)

    addresses = []
    for address in (config.listen, *config.extra_listen):
        if address.startswith("unix://"):
            _claim_unix_socket(address)
            _listen(server, address)
            addresses.append(address)
        else:
            host, _ = split_address(address)
            bound = _listen(server, address)
            addresses.append(f"{host}:{bound}" if ":" not in host else f"[{host}]:{bound}")
    server.start()
    srv = Server(config, metrics, store, verifier, decision_log, pipeline, server, health_servicer, addresses)
    srv.state = state
    srv.containment = containment
    srv.watcher = PolicyWatcher(store, config.reload)
    srv.watcher.start()
    if config.admin_listen:
        srv.admin_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="pep-admin"), options=GRPC_OPTIONS
        )
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(kills, store.current, metrics, decision_log.write_event), srv.admin_server
        )
        try:
            if config.admin_listen.startswith("unix://"):
                _claim_unix_socket(config.admin_listen)
            bound = _listen(srv.admin_server, config.admin_listen)
        except ListenError:
            srv.admin_server = None
            srv.stop(0)
            raise
        srv.admin_address = (
            config.admin_listen
            if config.admin_listen.startswith("unix://")
            else f"{split_address(config.admin_listen)[0]}:{bound}"
        )
        srv.admin_server.start()
    if config.metrics_listen:
        try:
            srv.metrics_http, srv.metrics_address = _start_metrics_http(config.metrics_listen, srv)
        except ListenError:
            srv.stop(0)
            raise
    if config.authzen.listen:
        try:
            srv.authzen = AuthzenServer(
                config.authzen, pipeline, shutdown_timeout=config.shutdown_grace_seconds, refused=metrics.http_refused
            )
        except OSError as e:
            srv.stop(0)
            raise ListenError(config.authzen.listen, e.strerror or str(e)) from None
        srv.authzen_address = srv.authzen.address
        who = "subject as given" if config.authzen.trust_subject else "subject from the token"
        log.info("AuthZEN API on %s (%s)", srv.authzen_address, who)
    if config.mcp.listen:
        try:
            srv.mcp = McpProxy(
                config.mcp,
                pipeline,
                dpop_algorithms=config.tokens.dpop_algorithms,
                shutdown_timeout=config.shutdown_grace_seconds,
                refused=metrics.http_refused,
                upstream_failed=metrics.mcp_upstream_failed,
            )
        except OSError as e:
            srv.stop(0)
            raise ListenError(config.mcp.listen, e.strerror or str(e)) from None
        srv.mcp_address = srv.mcp.address
        log.info("MCP proxy on %s for %s (%s)", srv.mcp_address, config.mcp.upstream, srv.mcp.public_url)
    metrics_where = f"metrics on {srv.metrics_address}" if srv.metrics_address else "metrics off"
    log.info("pep serving on %s (%s)", ", ".join(addresses), metrics_where)
    return srv


def _anomaly(
    cfg: AnomalyConfig, kills: RuntimeKills, decision_log: DecisionLog, metrics: Metrics
) -> tuple[Containment | None, Detector | None]:
    """The anomaly rules' detector on the request path and the containment behind it; (None, None) without rules."""
    if not cfg.rules:
        return None, None
    metrics.anomaly_rules((r.name, r.action) for r in cfg.rules)
    containment = Containment(kills, decision_log.write_event, metrics.anomaly_fired)
    containment.start()
    return containment, Detector(cfg.rules, containment.submit)


def _on_kill_change(
    metrics: Metrics, kills: RuntimeKills, store: PolicyStore, decision_log: DecisionLog, detector: Detector | None
) -> Callable[[list[tuple[str, KillEntry]], bool], None]:
    """Every change counted; an agent enabled runs its anomaly rules again on fresh windows; flips applied
    from elsewhere (another replica, `pep admin --state`) are logged here too."""

    def changed(changes: list[tuple[str, KillEntry]], remote: bool) -> None:
        update_kill_gauge(metrics, kills, store.current())
        if detector is not None:
            for action, e in changes:
                if action == "enable" and e.kind == "agent":
                    detector.release(e.id)
        if not remote:
            return  # the admin API logs its own
        ts = utc_timestamp(time.time())
        for action, e in changes:
            event = {"schema": 1, "ts": ts, "event": "admin", "action": action, "kind": e.kind, "id": e.id}
            revoked = revoke_kind(e.kind)
            if revoked is not None:  # a revocation: logged as the admin API logs it
                event.update(action="revoke" if action == "disable" else "unrevoke", kind=revoked)
                if action == "disable" and e.before is not None:
                    event["before"] = utc_timestamp(e.before)
            event.update(reason=e.reason, actor=e.actor, source=e.source, changed=True, scope=kills.scope)
            event["applied"] = "fleet"
            if not decision_log.write_event(event):
                log.error("kill switch change could not be written to the decision log: %s", event)
            log.warning(
                "kill switch (fleet): %s %s %r (%s) by %r", action, e.kind, e.id, e.reason or "-", e.actor or "-"
            )

    return changed


def _claim_unix_socket(address: str) -> None:
    """Make way for a Unix socket: a stale one from a dead process is removed, a live one is a clash."""
    path = address[len("unix://") :]
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: left by a process that is gone
        return
    finally:
        probe.close()
    raise ListenError(address, "another process is listening on this socket")


def _listen(server: grpc.Server, address: str) -> int:
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ListenError(address, str(e)) from None
    if bound == 0:
        raise ListenError(address, "the address is in use or not available")
    return bound


def _start_metrics_http(address: str, srv: Server) -> tuple[ThreadingHTTPServer, str]:
    registry = srv.metrics.registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                if srv.draining.is_set():
                    self._send(503, b"shutting down\n")
                elif srv.store.current() is None:
                    self._send(503, b"no valid policy set loaded\n")
                else:
                    self._send(200, b"ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    host, port = split_address(address)
    try:
        httpd = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise ListenError(address, e.strerror or str(e)) from None
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="pep-metrics", daemon=True).start()
    return httpd, f"{host}:{httpd.server_address[1]}"


def serve_forever(config: Config) -> int:
    srv = build_server(config)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: draining (grace %.1fs)", signum, config.shutdown_grace_seconds)
        threading.Thread(target=srv.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        srv.wait()
    except KeyboardInterrupt:
        srv.stop()
    time.sleep(0)
    return 0
