"""The floor: the same gRPC server setup as pep, with an Authorize that does nothing."""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc

_ALLOW = pb.AuthorizeResponse(decision=pb.DECISION_ALLOW, reason="allowed")


class Noop(pb_grpc.AuthorizerServicer):
    def Authorize(self, request: pb.AuthorizeRequest, context: grpc.ServicerContext) -> pb.AuthorizeResponse:
        return _ALLOW

    def AuthorizeBatch(
        self, request: pb.AuthorizeBatchRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizeBatchResponse:
        return pb.AuthorizeBatchResponse(responses=[_ALLOW] * len(request.checks))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)],
    )
    pb_grpc.add_AuthorizerServicer_to_server(Noop(), server)
    server.add_insecure_port(args.listen)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
