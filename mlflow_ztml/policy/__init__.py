"""Policy gates: Rego packages evaluated by a pluggable engine (in-process regorus or OPA REST)."""
