"""GPU memory plan for a vLLM deployment: weights + KV cache against the GPU's memory.

Per GPU (tensor parallelism splits both weights and KV heads):

- weights = parameters x dtype bytes / tp (exact file sizes when the model folder has
  safetensors; otherwise parameters estimated from ``config.json``);
- KV cache = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes x max_model_len x
  max_num_seqs / tp;
- a fixed overhead for activations, CUDA graphs and the CUDA context;
- against GPU memory x gpu_memory_utilization (vLLM's budget).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge.errors import UsageError

__all__ = [
    "GPUS",
    "MemoryPlan",
    "kv_bytes_per_token",
    "load_model_config",
    "parameter_count",
    "plan_memory",
]

GIB = 1024**3
# Memory per GPU in GiB (as reported by the driver, rounded down).
GPUS: dict[str, float] = {
    "T4": 15.0,
    "L4": 22.0,
    "A10G": 22.0,
    "RTX4090": 23.5,
    "L40S": 44.5,
    "A100-40GB": 39.5,
    "A100-80GB": 79.0,
    "H100": 79.0,
    "H200": 139.0,
}
DTYPE_BYTES = {
    "float32": 4,
    "fp32": 4,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "fp8": 1,
    "float8": 1,
}
OVERHEAD_GIB = 1.5
WARN_SHARE = 0.9


def load_model_config(path: str | Path) -> dict[str, Any]:
    """A model's ``config.json`` (a file, or a folder holding one); multimodal configs are
    reduced to their ``text_config``."""
    source = Path(path)
    if source.is_dir():
        source = source / "config.json"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the model config {source}: {exc}; pass --model-config PATH/config.json"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(
            f"the model config {source} holds a JSON {type(data).__name__}, not an object; "
            "pass the model's transformers config.json"
        )
    text_config = data.get("text_config")
    if isinstance(text_config, dict) and "num_hidden_layers" not in data:
        data = {**data, **text_config}
    _check_config_numbers(data, source)
    return data


_CONFIG_NUMBERS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)


def _check_config_numbers(config: Mapping[str, Any], source: Path) -> None:
    """The sizes the plan reads are positive whole numbers; the KV-cache ones are present."""
    for key in _CONFIG_NUMBERS:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(
                f"the model config {source}: {key} must be a positive whole number, got "
                f"{value!r}; pass the model's transformers config.json"
            )
    needed = ["num_hidden_layers", "num_attention_heads"]
    if not config.get("head_dim"):
        needed.append("hidden_size")
    missing = [key for key in needed if key not in config]
    if missing:
        raise UsageError(
            f"the model config {source} has no {', '.join(map(repr, missing))}; pass the "
            "model's transformers config.json"
        )


def _head_dim(config: Mapping[str, Any]) -> int:
    if config.get("head_dim"):
        return int(config["head_dim"])
    return int(config["hidden_size"]) // int(config["num_attention_heads"])


def _kv_heads(config: Mapping[str, Any]) -> int:
    return int(config.get("num_key_value_heads") or config["num_attention_heads"])


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of a decoder-only transformer with a gated MLP, from its config."""
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        inter = int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except KeyError as exc:
        raise UsageError(
            f"the model config has no {exc.args[0]!r}; pass a transformers config.json"
        ) from None
    head_dim, kv = _head_dim(config), _kv_heads(config)
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2  # q, o and k, v
    mlp = 3 * hidden * inter
    norms = 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp + norms) + embeddings + hidden


def kv_bytes_per_token(config: Mapping[str, Any], dtype_bytes: int) -> int:
    """KV-cache bytes one token takes across all layers."""
    return (
        2 * int(config["num_hidden_layers"]) * _kv_heads(config) * _head_dim(config) * dtype_bytes
    )


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """The numbers of a plan (bytes per GPU) and what they mean."""

    gpu: str
    gpu_bytes: int
    utilization: float
    tensor_parallel_size: int
    dtype: str
    max_model_len: int
    max_num_seqs: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    status: str  # "fits", "tight" or "does_not_fit"
    suggestion: str

    @property
    def budget_bytes(self) -> int:
        return int(self.gpu_bytes * self.utilization)

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            budget_bytes=self.budget_bytes,
            needed_bytes=self.needed_bytes,
            needed_gib=round(self.needed_bytes / GIB, 2),
            budget_gib=round(self.budget_bytes / GIB, 2),
        )
        return data

    def summary(self) -> str:
        return (
            f"memory plan on {self.gpu} (tp={self.tensor_parallel_size}, {self.dtype}): weights "
            f"{self.weights_bytes / GIB:.2f} GiB + KV cache {self.kv_cache_bytes / GIB:.2f} GiB "
            f"({self.max_model_len} tokens x {self.max_num_seqs} seqs) + overhead "
            f"{self.overhead_bytes / GIB:.2f} GiB = {self.needed_bytes / GIB:.2f} GiB of "
            f"{self.budget_bytes / GIB:.2f} GiB budget: {self.status}"
            + (f". {self.suggestion}" if self.suggestion else "")
        )


def plan_memory(
    config: Mapping[str, Any],
    *,
    gpu: str | None = None,
    gpu_memory_gib: float | None = None,
    max_model_len: int,
    max_num_seqs: int,
    dtype: str = "bfloat16",
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    weights_bytes: int | None = None,
) -> MemoryPlan:
    """Plan memory for serving a model; ``weights_bytes`` overrides the estimate."""
    if gpu_memory_gib is None:
        name = (gpu or "A10G").upper()
        if name not in GPUS:
            raise UsageError(
                f"unknown GPU {gpu!r}; known: {', '.join(GPUS)} (or pass --gpu-memory-gib N)"
            )
        gpu_label, gpu_bytes = name, int(GPUS[name] * GIB)
    else:
        gpu_label, gpu_bytes = gpu or f"{gpu_memory_gib:g} GiB GPU", int(gpu_memory_gib * GIB)
    dtype_bytes = DTYPE_BYTES.get(dtype.lower())
    if dtype_bytes is None:
        raise UsageError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPE_BYTES))}")
    tp = max(1, tensor_parallel_size)
    total_weights = (
        weights_bytes if weights_bytes is not None else parameter_count(config) * dtype_bytes
    )
    weights = math.ceil(total_weights / tp)
    per_seq = math.ceil(kv_bytes_per_token(config, dtype_bytes) * max_model_len / tp)
    kv = per_seq * max_num_seqs
    overhead = int(OVERHEAD_GIB * GIB)
    budget = int(gpu_bytes * gpu_memory_utilization)
    needed = weights + kv + overhead
    room = budget - weights - overhead
    if needed <= budget * WARN_SHARE:
        status, suggestion = "fits", ""
    elif needed <= budget:
        status = "tight"
        headroom = int((1 - WARN_SHARE) * 100)
        safer = max(1, room // per_seq * 3 // 4)
        suggestion = f"less than {headroom}% headroom; consider --max-num-seqs {safer}"
    else:
        status = "does_not_fit"
        if room >= per_seq:
            suggestion = f"lower --max-num-seqs to {room // per_seq}"
            fitting_len = int(room / max_num_seqs / (per_seq / max_model_len)) // 256 * 256
            if fitting_len >= 256:
                suggestion += f" (or --max-model-len to {fitting_len})"
        else:
            need_tp = tp
            while (
                need_tp < 64
                and math.ceil(total_weights / need_tp) + overhead + per_seq * tp / need_tp > budget
            ):
                need_tp *= 2
            suggestion = (
                f"the weights alone need {weights / GIB:.1f} GiB of {budget / GIB:.1f} GiB: use "
                f"--tensor-parallel-size {need_tp}, a larger GPU, or a quantized model"
            )
    return MemoryPlan(
        gpu_label,
        gpu_bytes,
        gpu_memory_utilization,
        tp,
        dtype,
        max_model_len,
        max_num_seqs,
        weights,
        kv,
        overhead,
        status,
        suggestion,
    )
