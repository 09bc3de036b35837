"""PEFT adapter folder -> GGUF LoRA file for llama.cpp, written with the ``gguf`` package.

Runs in-process with no network and no llama.cpp checkout. The file has the layout that
llama.cpp's own ``convert_lora_to_gguf.py`` writes and ``llama_adapter_lora_init`` reads:

- metadata ``general.architecture`` (the base model's llama.cpp architecture),
  ``general.type = "adapter"``, ``adapter.type = "lora"`` and ``adapter.lora.alpha``;
- for each adapted linear layer, two float32 tensors named after the base model's GGUF
  tensor: ``<name>.weight.lora_a`` (PEFT's ``lora_A``, rank x inputs) and
  ``<name>.weight.lora_b`` (PEFT's ``lora_B``, outputs x rank), e.g.
  ``blk.0.attn_q.weight.lora_a``. llama.cpp scales each product by ``alpha / rank``.

Only architectures whose linear weights llama.cpp keeps in Hugging Face's layout are
converted (llama-family models permute q/k rows, which this converter does not do); for the
others the PEFT adapter stays usable (e.g. served by vLLM).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmforge._atomic import atomic_path
from lmforge.errors import UsageError

from ._deps import require

__all__ = ["convert_to_gguf", "lora_tensors"]

# Hugging Face ``model_type`` -> llama.cpp architecture name (``gguf.MODEL_ARCH_NAMES``).
_ARCHITECTURES = {
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}
_PEFT_PREFIX = "base_model.model."
# Multimodal checkpoints nest the text model; llama.cpp names its tensors as the text model's.
_TEXT_MODEL_PREFIXES = (("model.language_model.", "model."), ("language_model.", ""))
_PARTS = {".lora_A.weight": "lora_a", ".lora_B.weight": "lora_b"}


def _read_json(path: Path, adapter_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read {path} ({type(exc).__name__}); the adapter at {adapter_dir} needs it"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object")
    return data


def _alpha(config: dict[str, Any], adapter_dir: Path) -> float:
    """``adapter.lora.alpha``: llama.cpp scales by alpha / rank, as PEFT does by default."""
    unsupported = [
        key
        for key in ("use_dora", "alpha_pattern", "lora_bias", "modules_to_save")
        if config.get(key)
    ]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise UsageError(
            f"the adapter at {adapter_dir} uses {unsupported or [config.get('peft_type')]}, "
            "which llama.cpp's LoRA format cannot express; train a plain LoRA for local/ models"
        )
    alpha, rank = config.get("lora_alpha"), config.get("r")
    if not isinstance(alpha, int | float) or not isinstance(rank, int) or rank < 1:
        raise UsageError(f"{adapter_dir}/adapter_config.json lacks a numeric lora_alpha and r")
    # rsLoRA scales by alpha / sqrt(rank): the same scale as alpha * sqrt(rank) / rank.
    return float(alpha) * math.sqrt(rank) if config.get("use_rslora") else float(alpha)


def _architecture(base: dict[str, Any], base_dir: Path) -> tuple[str, int]:
    nested = base.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else {}
    model_type = str(text.get("model_type") or base.get("model_type") or "")
    blocks = text.get("num_hidden_layers") or base.get("num_hidden_layers")
    if model_type not in _ARCHITECTURES or not isinstance(blocks, int):
        raise UsageError(
            f"converting a LoRA adapter to GGUF supports {sorted(set(_ARCHITECTURES))} base "
            f"models, not {model_type or 'the model'} in {base_dir}; run the PEFT adapter "
            "with vLLM (hosted_vllm/...) instead"
        )
    return _ARCHITECTURES[model_type], blocks


def _load(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's tensors as float32 numpy arrays (safetensors only: never pickle)."""
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise UsageError(
            f"{adapter_dir} has no adapter_model.safetensors; save the PEFT adapter with "
            "safe_serialization=True"
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {key: handle.get_tensor(key).astype("float32") for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, TypeError, ValueError):
        pass  # bfloat16 has no numpy dtype: read through torch
    (torch,) = require("torch", purpose="Converting a LoRA adapter to GGUF")
    with safe_open(str(path), framework="pt") as handle:
        return {
            key: handle.get_tensor(key).to(torch.float32).numpy()
            for key in handle.keys()  # noqa: SIM118
        }


def lora_tensors(adapter_dir: Path, base_dir: Path) -> tuple[str, float, dict[str, Any]]:
    """``(architecture, alpha, {gguf tensor name: float32 array})`` of the PEFT adapter in
    ``adapter_dir``, trained on the Hugging Face model in ``base_dir``."""
    (gguf,) = require("gguf", "safetensors", purpose="Converting a LoRA adapter to GGUF")[:1]
    config = _read_json(adapter_dir / "adapter_config.json", adapter_dir)
    alpha = _alpha(config, adapter_dir)
    architecture, blocks = _architecture(_read_json(base_dir / "config.json", base_dir), base_dir)
    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == architecture), None)
    if arch is None:
        raise UsageError(
            f"the installed gguf package does not know the {architecture} architecture; "
            "upgrade it: pip install -U gguf"
        )
    names = gguf.get_tensor_name_map(arch, blocks)
    tensors: dict[str, Any] = {}
    for key, array in sorted(_load(adapter_dir).items()):
        suffix = next((s for s in _PARTS if key.endswith(s)), None)
        if suffix is None:
            raise UsageError(
                f"{adapter_dir} holds {key}, not a LoRA A/B weight of a linear layer; "
                "llama.cpp's LoRA format has no place for it"
            )
        module = key.removeprefix(_PEFT_PREFIX).removesuffix(suffix)
        for prefix, replacement in _TEXT_MODEL_PREFIXES:
            if module.startswith(prefix):
                module = replacement + module.removeprefix(prefix)
                break
        target = names.get_name(module)
        if target is None or module.endswith(("lm_head", "embed_tokens")):
            raise UsageError(
                f"the adapter targets {module}, which has no LoRA-able llama.cpp tensor; "
                "leave it out of target_modules"
            )
        tensors[f"{target}.weight.{_PARTS[suffix]}"] = array
    _check_pairs(tensors, adapter_dir)
    return architecture, alpha, tensors


def _check_pairs(tensors: dict[str, Any], adapter_dir: Path) -> None:
    bases = {name.rsplit(".", 1)[0] for name in tensors}
    if not bases:
        raise UsageError(f"the adapter at {adapter_dir} has no LoRA weights")
    for base in sorted(bases):
        a, b = tensors.get(f"{base}.lora_a"), tensors.get(f"{base}.lora_b")
        if a is None or b is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise UsageError(
                f"the adapter at {adapter_dir} has no matching lora_A/lora_B pair for {base}"
            )


def convert_to_gguf(adapter_dir: Path, base_dir: Path, out_file: Path) -> Path:
    """Convert the PEFT adapter in ``adapter_dir`` (trained on the HF model in
    ``base_dir``) into a float32 GGUF LoRA at ``out_file``."""
    (gguf,) = require("gguf", purpose="Converting a LoRA adapter to GGUF")
    architecture, alpha, tensors = lora_tensors(Path(adapter_dir), Path(base_dir))
    with atomic_path(out_file) as tmp:
        writer = gguf.GGUFWriter(str(tmp), architecture)
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            for name, array in tensors.items():
                writer.add_tensor(name, array)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return out_file
