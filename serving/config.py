"""Server settings: command-line flags override `SERVING_*` environment variables.

Every option has both forms (`--max-batch-size` / `SERVING_MAX_BATCH_SIZE`) so the same image
runs under Docker, Kubernetes and the local process runtime without a wrapper script.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_CHOICES: dict[str | None, tuple[str, ...]] = {
    "response_format": ("ztml", "mlifecycle"),
    "prediction_task": ("auto", "classification", "regression"),
}


class Settings(BaseSettings):
    """All knobs of the server. Field `x` is read from env var `SERVING_X`."""

    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")

    model_uri: str = Field(description="MLflow model URI (models:/NAME/VERSION, runs:/...) or dir")
    host: str = Field("127.0.0.1", description="bind address (the image sets 0.0.0.0)")
    port: int = Field(8080, ge=0, le=65535)
    grpc_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="also serve the Open Inference Protocol over gRPC on this port (same host, "
        "model, batching, API key); 0 = off",
    )
    model_name: str | None = Field(None, description="label for the model (default: from URI)")
    model_version: str | None = Field(None, description="label for the version (default: URI)")
    api_key: SecretStr | None = Field(None, description="require X-API-Key / Bearer when set")
    max_batch_size: int = Field(64, ge=1, description="most rows merged into one model call")
    max_batch_delay_ms: float = Field(
        2.0, ge=0, description="longest wait for a batch to fill; 0 turns batching off"
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="larger bodies get 413")
    request_timeout_seconds: float = Field(60.0, gt=0, description="slower requests get 504")
    shutdown_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="after SIGTERM, answer what was received for at most this long, then exit "
        "(keep it below the orchestrator's stop timeout: docker 15 s, Kubernetes "
        "terminationGracePeriodSeconds minus the preStop sleep)",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    num_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's")
    inline_inference: str = Field(
        "auto",
        description="run the model on the event loop: auto (CPU models whose warm-up call "
        "takes < 2 ms) | on | off (always on the inference thread)",
    )
    image_digest: str | None = Field(None, description="shown in /model/info")
    log_level: str = Field("info", description="debug | info | warning | error")
    access_log: bool = Field(False, description="one JSON log line per request")
    noop_endpoint: bool = Field(False, description="benchmarks only: POST /noop")
    response_format: str = Field(
        "ztml",
        description="/predict, /health, /ready answers: ztml (default) | mlifecycle (the "
        "published mlifecycle inference contract, see serving/published.py)",
    )
    max_instances: int = Field(
        100, ge=1, description="mlifecycle format: most instances per /predict; more is 422"
    )
    prediction_task: str = Field(
        "auto",
        description="mlifecycle format: auto (decided from the model) | classification | "
        "regression",
    )

    model_signature: str | None = Field(
        None,
        description="model-signing bundle (model.sig) the model files must match before they "
        "load; needs --model-public-key",
    )
    model_public_key: str | None = Field(
        None, description="PEM public key that verifies --model-signature"
    )
    require_model_signature: bool = Field(
        False, description="refuse to start without a model signature (production)"
    )
    model_public_key_id: str | None = Field(
        None,
        description="sha256:<hex> of the public key's DER that --model-public-key must be: set "
        "by the control plane, so a key swapped in beside the model files is refused",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")

    @field_validator("inline_inference")
    @classmethod
    def _inline(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("auto", "on", "off"):
            raise ValueError(f"inline inference must be auto, on or off, not {value!r}")
        return value

    @field_validator("response_format", "prediction_task")
    @classmethod
    def _choice(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().lower()
        choices = _CHOICES[info.field_name]
        if value not in choices:
            raise ValueError(f"must be {' or '.join(choices)}, not {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"log level must be debug|info|warning|error, not {value!r}")
        return value

    @field_validator(
        "model_name",
        "model_version",
        "image_digest",
        "api_key",
        "model_signature",
        "model_public_key",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _unset_is_off(cls, value: Any) -> Any:
        return 0 if value == "" else value

    @field_validator("grpc_port")
    @classmethod
    def _own_port(cls, value: int, info: ValidationInfo) -> int:
        if value and value == info.data.get("port"):
            raise ValueError(f"gRPC port {value} is the HTTP port; give each its own")
        return value

    @property
    def batching(self) -> bool:
        """Batching is on unless the delay is 0 (or batches hold one row)."""
        return self.max_batch_delay_ms > 0 and self.max_batch_size > 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve one MLflow model over HTTP (/predict, /invocations, /v2) and, with "
        "--grpc-port, the Open Inference Protocol over gRPC.",
        epilog="Every flag can also be given as an environment variable SERVING_<FLAG> "
        "(e.g. SERVING_MAX_BATCH_SIZE); flags win.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=field.description,
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=field.description)
    return parser


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Build settings from flags and `SERVING_*` env vars; exits with a usage error if invalid."""
    parser = _parser()
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        parser.error(f"{problems} (set the flag or the SERVING_* environment variable)")
        raise  # unreachable: parser.error exits
