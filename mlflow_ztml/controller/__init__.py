"""The registry controller: MLflow registry facts (aliases, stages, `ztml.deploy` tags) become
running deployments, level-triggered like a Kubernetes controller.

Modules: `signature` (webhook HMAC), `events` (delivery -> keys), `desired` (registry ->
wanted state), `reconcile` (one key), `queue` (keyed work queue with backoff), `leader`
(Lease election), `app` (HTTP), `manager` (the process), `webhooks` (register/test in MLflow).
"""
