"""ztml: zero-touch ML deployment for MLflow.

The control plane: read a model version's evidence from MLflow into a `ModelDeployment`
manifest, gate it with Rego policies, deploy it, verify it and write the outcome back to MLflow.
"""

__version__ = "0.1.0"
