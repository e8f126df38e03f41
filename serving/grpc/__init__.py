"""The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService`.

`predict_v2.proto` is the protocol's service, written from the public specification;
`predict_v2_pb2*.py` are generated from it (`python -m serving.grpc.generate`, committed so the
image needs no code generator). `codec` turns messages into the data plane's v2 payloads and
back, `servicer` implements the six RPCs over `serving.dataplane`, `server` runs them on the
HTTP server's event loop (`--grpc-port` / `SERVING_GRPC_PORT`).

Nothing here is imported unless a gRPC port is set: grpcio and protobuf are then needed.
"""
