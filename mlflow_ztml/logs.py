"""Logging for ztml's processes (CLI, controller) and the plugin: redacted and quiet.

- `RedactingFilter` redacts every record a handler emits: the message, its arguments, the
  exception text and the stack (`mlflow_ztml.redact.redact`). `configure()` installs it on every
  handler ztml sets up, and on MLflow's own handler, so no log line carries a credential,
  whoever logged it.
- MLflow's deprecation and future warnings, and its INFO/WARNING chatter ("Creating initial
  MLflow database tables...", deprecation notices) are not for ztml's users: `configure()`
  hides them for the whole process (the CLI), `quiet()` for the duration of one call (the
  plugin, which runs inside someone else's process). `MLFLOW_LOGGING_LEVEL`, when set, wins.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from mlflow_ztml.redact import redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CLI_FORMAT = "ztml: %(levelname)s %(name)s: %(message)s"
HIDDEN_WARNINGS: tuple[type[Warning], ...] = (
    DeprecationWarning,
    PendingDeprecationWarning,
    FutureWarning,
)
# loggers whose WARNING/INFO lines are MLflow's business, not the ztml user's
QUIET_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine")
_formatter = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Redacts a record in place (message, args, exception, stack); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _redacted_message(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redacted_message(record: logging.LogRecord) -> tuple[Any, Any]:
    """(msg, args) with credentials removed; args keep their types where they are clean."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: let the handler report it as it would
        return record.msg, record.args
    clean = redact(message)
    if clean == message:
        return record.msg, record.args
    msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
    args = _redacted_args(record.args)
    try:
        if (msg % args if args else str(msg)) == clean:
            return msg, args
    except Exception:  # noqa: S110 - fall back to the fully formatted, redacted message
        pass
    return clean, None


def _redacted_args(args: Any) -> Any:
    if isinstance(args, Mapping):
        return {k: _redacted_arg(v) for k, v in args.items()}
    if isinstance(args, tuple):
        return tuple(_redacted_arg(v) for v in args)
    return args


def _redacted_arg(value: Any) -> Any:
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean


class _ZtmlHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, without a fixed stream, writes to whatever `sys.stderr` is now
    (a test runner may swap it between commands run in one process)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        logging.Handler.__init__(self)
        self._fixed = stream

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        self._fixed = value


def install_filter(*loggers: logging.Logger) -> None:
    """Put a RedactingFilter on every handler of `loggers` (root when none) that lacks one, and
    on `logging.lastResort`, which prints WARNING records in a process that configured no
    logging (the plugin inside `mlflow deployments`)."""
    handlers = [h for logger in loggers or (logging.getLogger(),) for h in logger.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def configure(
    level: str | int = "WARNING", fmt: str = CLI_FORMAT, stream: IO[str] | None = None
) -> logging.Handler:
    """Process-wide logging for a ztml process: one stderr handler on the root logger with the
    redacting filter, MLflow's handlers redacted too, MLflow's warnings hidden.

    Replaces handlers a previous `configure()` installed (idempotent); others stay, filtered.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ZtmlHandler):
            root.removeHandler(handler)
    handler = _ZtmlHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    hide_library_warnings()
    install_filter(root, *(logging.getLogger(name) for name in QUIET_LOGGERS))
    return handler


def hide_library_warnings() -> None:
    """For a whole process: no deprecation/future warnings (unless `-W`/`PYTHONWARNINGS` asks
    for them), MLflow's loggers at ERROR (unless `MLFLOW_LOGGING_LEVEL` says otherwise).

    MLflow sets its loggers up when first imported, from `MLFLOW_LOGGING_LEVEL`: before that
    import the variable carries the level (importing MLflow only to quiet it costs seconds).
    """
    if not sys.warnoptions:
        for category in HIDDEN_WARNINGS:
            warnings.filterwarnings("ignore", category=category)
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        return
    if "mlflow" not in sys.modules:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "ERROR"
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def quiet() -> Iterator[None]:
    """For one call inside someone else's process (the plugin): MLflow's warnings hidden and
    its log handlers redacted while the call runs; levels and warning filters are restored."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    install_filter(*loggers)
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category in HIDDEN_WARNINGS:
            warnings.simplefilter("ignore", category=category)
        if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
            for logger in loggers:
                logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
