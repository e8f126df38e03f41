"""Regenerate `predict_v2_pb2.py` / `predict_v2_pb2_grpc.py` from `predict_v2.proto`.

`python -m serving.grpc.generate` (needs grpcio-tools, a dev dependency; the image only needs
the generated files, grpcio and protobuf). Run from anywhere: paths are the repository's. The
import path in the generated code is `serving.grpc`, so the files are importable as a package.
After regenerating, raise the protobuf floor in serving/requirements.txt to the runtime version
the new code checks for (`ValidateProtobufRuntimeVersion` in predict_v2_pb2.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO = "serving/grpc/predict_v2.proto"


def main() -> int:
    from grpc_tools import protoc  # dev-only: imported here, never by the server

    args = [
        "grpc_tools.protoc",
        f"-I{REPO}",
        f"--python_out={REPO}",
        f"--pyi_out={REPO}",
        f"--grpc_python_out={REPO}",
        str(REPO / PROTO),
    ]
    code = protoc.main(args)
    if code:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
