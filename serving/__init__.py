"""ztml inference server: serves one MLflow model over HTTP.

Runs inside the image built by the control plane and locally (`python -m serving`). It depends
only on Starlette/uvicorn, prometheus-client and mlflow-skinny (plus the model's own
requirements) and never on the control plane (`mlflow_ztml`), so the image stays small and the
data plane can be upgraded independently.
"""

__version__ = "0.1.0"
