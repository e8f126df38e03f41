"""ztml's default Rego policies and per-environment data (mlflow_ztml.default_policies)."""
