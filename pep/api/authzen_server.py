"""The AuthZEN HTTP listener: cheroot, a threaded WSGI server, with body, header and idle limits."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from cheroot import wsgi

from pep.api.authzen import MAX_HEADER_BYTES, SOCKET_MODE, AuthzenApp
from pep.config import AuthzenConfig, split_address
from pep.pipeline import Pipeline

log = logging.getLogger(__name__)


class _Server(wsgi.Server):
    """cheroot's WSGI server, logging through `logging` and with a private Unix socket."""

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        log.log(level, "authzen http: %s", msg, exc_info=traceback)

    def bind_unix_socket(self, bind_addr: Any) -> Any:
        sock = super().bind_unix_socket(bind_addr)
        # cheroot makes the socket world-writable; on a trust_subject listener whoever can
        # connect can name any subject. Tightened before listen(), so no one connects first.
        os.chmod(self.bind_addr, SOCKET_MODE)
        return sock


class AuthzenServer:
    """A running AuthZEN listener. `address` is where it listens (port 0 resolved)."""

    def __init__(self, config: AuthzenConfig, pipeline: Pipeline, *, shutdown_timeout: float = 5.0) -> None:
        bind: Any
        if config.listen.startswith("unix://"):
            bind = config.listen[len("unix://") :]
            os.makedirs(os.path.dirname(bind) or "/", exist_ok=True)
        else:
            bind = split_address(config.listen)
        self._server = _Server(
            bind,
            None,  # the app needs the bound address for its metadata: set below
            numthreads=config.threads,
            max=config.threads,
            server_name="pep",
            timeout=max(1, round(config.timeout_seconds)),
            shutdown_timeout=max(1, round(shutdown_timeout)),
            accepted_queue_size=config.threads * 16,
            accepted_queue_timeout=1,
        )
        self._server.max_request_header_size = MAX_HEADER_BYTES
        self._server.expiration_interval = 0.1  # how often the accept loop looks up: bounds stop()
        self._server.prepare()  # binds and listens; raises OSError when it cannot
        if isinstance(self._server.bind_addr, str):
            self.address = config.listen
            base = "http://localhost"
        else:
            host, port = self._server.bind_addr[:2]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            base = f"http://{self.address}"
        self._server.wsgi_app = AuthzenApp(pipeline, config, config.base_url or base)
        self._thread = threading.Thread(target=self._server.serve, name="pep-authzen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close."""
        self._server.stop()
        self._thread.join(timeout=10)
