#!/usr/bin/env bash
# The main job on the embedded default: a local MLflow (sqlite), a PyTorch demo model
# registered with its evidence, judged by the in-process Rego engine, deployed on the
# process runtime with `mlflow deployments create -t ztml`, then a worse version rejected.
# Run through `make demo`; set DEMO_KEEP=1 to leave the MLflow server running afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${VENV:-$ROOT/.venv}/bin"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
DEMO="$ROOT/.demo"
MODEL="demo-classifier"

rm -rf "$DEMO" && mkdir -p "$DEMO"
PORT="$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT"
export ZTML_HOME="$DEMO/ztml-home"
export ZTML_CONFIG="$ROOT/scripts/demo-ztml.yaml"
export GIT_PYTHON_REFRESH=quiet

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  if [ "${DEMO_KEEP:-0}" != "1" ]; then
    "$BIN/ztml" delete demo >/dev/null 2>&1 || true
    [ -n "${MLFLOW_PID:-}" ] && kill "$MLFLOW_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "Starting a local MLflow server on $MLFLOW_TRACKING_URI (sqlite under .demo/)"
"$BIN/mlflow" server --backend-store-uri "sqlite:///$DEMO/mlflow.db" \
  --artifacts-destination "$DEMO/artifacts" --host 127.0.0.1 --port "$PORT" --workers 1 \
  >"$DEMO/mlflow.log" 2>&1 &
MLFLOW_PID=$!
# Up to 3 minutes: a first start creates the database and can be slow on a busy machine.
for _ in $(seq 1 360); do
  curl -fs "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "$MLFLOW_TRACKING_URI/health" >/dev/null || { tail -20 "$DEMO/mlflow.log"; exit 1; }

step "Training a PyTorch classifier and registering it with metrics, fairness, drift and lineage"
V1="$("$BIN/python" "$ROOT/scripts/demo_model.py" --name "$MODEL" --quality good | tail -1)"
echo "registered models:/$MODEL/$V1"

step "The evidence ztml reads from MLflow (ztml manifest --summary; the full manifest goes to .demo/)"
"$BIN/ztml" manifest "models:/$MODEL/$V1" --env local --summary -o "$DEMO/manifest-v$V1.yaml"

step "Governance gate for v$V1 (ztml gate, in-process Rego): every rule, its value and threshold"
"$BIN/ztml" gate "models:/$MODEL/$V1" --env local

step "Deploying v$V1 with the MLflow plugin: mlflow deployments create -t ztml"
"$BIN/mlflow" deployments create -t ztml --name demo -m "models:/$MODEL/$V1"
ENDPOINT="$("$BIN/ztml" status demo --format json | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)[0]["endpoint"])')"

step "A prediction from the live service"
BODY='{"inputs": [[0.5, -1.2, 0.3, 0.8, -0.1, 0.0, 1.1, -0.7]]}'
echo "curl -s -X POST $ENDPOINT/predict -H 'Content-Type: application/json' -d '$BODY'"
curl -s -X POST "$ENDPOINT/predict" -H 'Content-Type: application/json' -d "$BODY"; echo

step "A second, worse version: the gate must reject it with readable reasons"
V2="$("$BIN/python" "$ROOT/scripts/demo_model.py" --name "$MODEL" --quality poor | tail -1)"
set +e
"$BIN/mlflow" deployments update -t ztml --name demo -m "models:/$MODEL/$V2" 2>"$DEMO/update-v$V2.err"
STATUS=$?
set -e
grep -E '^\s+[0-9]+\. |rejected' "$DEMO/update-v$V2.err" || tail -5 "$DEMO/update-v$V2.err"
if [ "$STATUS" -eq 0 ]; then
  echo "expected the update to v$V2 to be rejected" >&2
  exit 1
fi

step "v$V1 keeps serving"
"$BIN/ztml" status demo
curl -s -X POST "$ENDPOINT/predict" -H 'Content-Type: application/json' -d "$BODY"; echo

step "What MLflow shows on the versions (ztml.local.* tags) and where to look"
"$BIN/python" - "$MODEL" "$V1" "$V2" <<'PY'
import os
import sys
from urllib.parse import quote

from mlflow import MlflowClient

ui = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
name, *versions = sys.argv[1:]
for version in versions:
    tags = MlflowClient().get_model_version(name, version).tags
    print(f"v{version}:")
    for key in ("ztml.local", *(f"ztml.local.{k}" for k in ("status", "decision", "endpoint", "violations"))):
        value = tags.get(key)
        if value:
            print(f"  {key} = " + value.replace("\n", "\n      "))
    print(f"  MLflow UI, the version:    {ui}/#/models/{quote(name, safe='')}/versions/{version}")
    audit = tags.get("ztml.local.audit_url")
    if audit:
        print(f"  decision report (HTML):    {audit}/artifactPath/report.html")
PY

step "Done. MLflow UI: $MLFLOW_TRACKING_URI (DEMO_KEEP=1 keeps it and the service running)"
