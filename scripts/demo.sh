#!/usr/bin/env bash
# The main job on the embedded default: a local MLflow (sqlite), a PyTorch demo model
# registered with its evidence, judged by the in-process Rego engine.
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
  if [ "${DEMO_KEEP:-0}" != "1" ] && [ -n "${MLFLOW_PID:-}" ]; then
    kill "$MLFLOW_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "Starting a local MLflow server on $MLFLOW_TRACKING_URI (sqlite under .demo/)"
"$BIN/mlflow" server --backend-store-uri "sqlite:///$DEMO/mlflow.db" \
  --artifacts-destination "$DEMO/artifacts" --host 127.0.0.1 --port "$PORT" --workers 1 \
  >"$DEMO/mlflow.log" 2>&1 &
MLFLOW_PID=$!
for _ in $(seq 1 120); do
  curl -fs "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "$MLFLOW_TRACKING_URI/health" >/dev/null || { tail -20 "$DEMO/mlflow.log"; exit 1; }

step "Training a PyTorch classifier and registering it with metrics, fairness, drift and lineage"
V1="$("$BIN/python" "$ROOT/scripts/demo_model.py" --name "$MODEL" --quality good | tail -1)"
echo "registered models:/$MODEL/$V1"

step "The ModelDeployment manifest ztml reads from MLflow (ztml manifest)"
"$BIN/ztml" manifest "models:/$MODEL/$V1" --env local -o "$DEMO/manifest-v$V1.yaml"
sed -n '1,40p' "$DEMO/manifest-v$V1.yaml"

step "Governance gate for v$V1 (ztml gate, in-process Rego)"
"$BIN/ztml" gate "models:/$MODEL/$V1" --env local

step "A second, worse version: the gate must reject it with readable reasons"
V2="$("$BIN/python" "$ROOT/scripts/demo_model.py" --name "$MODEL" --quality poor | tail -1)"
set +e
"$BIN/ztml" gate "models:/$MODEL/$V2" --env local
STATUS=$?
set -e
if [ "$STATUS" -ne 1 ]; then
  echo "expected the gate to deny v$V2 (exit 1), got exit $STATUS" >&2
  exit 1
fi

step "Done: v$V1 allowed, v$V2 rejected. MLflow UI: $MLFLOW_TRACKING_URI"
