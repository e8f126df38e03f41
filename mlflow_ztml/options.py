"""`DeployOptions`: what a caller may choose per deployment (CLI flags, the plugin's -C options).

A module of its own, with no dependency beyond pydantic, so that reading a deployment's
status or calling its endpoint (`mlflow deployments get/predict -t ztml`) validates its
options without loading the deploy pipeline. `mlflow_ztml.pipeline` re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DeployOptions(BaseModel):
    """What a caller may choose per deployment; unset fields come from the environment."""

    name: str | None = None
    runtime: str | None = None
    replicas: int | None = Field(default=None, ge=1)
    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = Field(default=None, ge=0)
    port: int | None = Field(default=None, ge=1, le=65535)
    max_batch_size: int | None = Field(default=None, ge=1)
    max_batch_delay_ms: float | None = Field(default=None, ge=0)
    response_format: Literal["ztml", "mlifecycle"] | None = None
    ready_timeout_seconds: float = Field(default=120.0, gt=0)
