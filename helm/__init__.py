"""Helm charts shipped inside the package as `mlflow_ztml.charts` (the kubernetes runtime finds
the ztml-inference chart here when ztml is installed from a wheel)."""
