"""JSON logging: one object per line on stdout, so log shippers need no parsing rules.

uvicorn's and MLflow's loggers are routed through the same handler (MLflow would otherwise
install its own plain-text stderr handler); `request_id` (and any other `extra` fields) become
top-level keys. The formatter redacts every finished line (`serving.redact`: message, extras,
traceback), so no logger, call site or library can write a credential to the log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from serving.redact import redact

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as `{"ts", "level", "logger", "message", ...extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "color_message" and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


def configure(level: str) -> None:
    """Install the JSON handler on the root logger; uvicorn's and MLflow's loggers propagate."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # read when mlflow is imported
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # library warnings become JSON lines too
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mlflow"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
