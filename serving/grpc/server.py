"""The gRPC server's lifecycle: started on the HTTP server's event loop (same model, same runner
and batcher), stopped with it.

`python -m serving` starts it once uvicorn has started (`--grpc-port` / `SERVING_GRPC_PORT`,
0 = off) on the same host. The SIGTERM drain counts its in-flight calls with HTTP's (see
`serving.__main__`): ServerReady turns false at once, calls still arriving are answered, and
`stop(grace)` then waits for what still runs within the same grace period. The port is bound
exclusively (no SO_REUSEPORT), so a port already in use fails the start instead of sharing it.
"""

from __future__ import annotations

import logging

import grpc

from serving.dataplane import DataPlane
from serving.grpc import predict_v2_pb2_grpc as pb_grpc
from serving.grpc.servicer import InferenceServicer
from serving.state import ServerState

log = logging.getLogger("serving.grpc")


class GrpcServer:
    """One `grpc.aio` server for `GRPCInferenceService`; `plane` counts its calls."""

    def __init__(self, state: ServerState, host: str, port: int) -> None:
        self.plane = DataPlane(state, "grpc")
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        limit = state.settings.max_body_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limit),  # SERVING_MAX_BODY_BYTES, as HTTP
                ("grpc.max_send_message_length", -1),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.plane), self._server
        )

    async def start(self) -> None:
        """Bind and serve; raises RuntimeError when the port cannot be bound."""
        try:
            bound = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen for gRPC on {self.address}: {exc}") from None
        if not bound:
            raise RuntimeError(f"cannot listen for gRPC on {self.address} (port in use?)")
        await self._server.start()
        log.info("gRPC listening", extra={"address": self.address})

    async def stop(self, grace: float) -> None:
        """Refuse new calls, give running ones up to `grace` seconds, then cancel them."""
        await self._server.stop(grace)
        log.info("gRPC stopped", extra={"calls": self.plane.total})
