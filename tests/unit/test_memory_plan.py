"""The vLLM memory plan on known model configs, with the numbers worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmforge.errors import UsageError
from lmforge.targets.memory import (
    GIB,
    kv_bytes_per_token,
    load_model_config,
    parameter_count,
    plan_memory,
)

LLAMA3_8B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 8192,
}
GEMMA3_270M = {
    "hidden_size": 640,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "intermediate_size": 2048,
    "vocab_size": 262144,
    "max_position_embeddings": 32768,
}


def test_llama3_8b_parameters_and_kv() -> None:
    # per layer: q,o 4096*32*128*2 = 33,554,432; k,v 4096*8*128*2 = 8,388,608;
    # mlp 3*4096*14336 = 176,160,768; norms 8,192 -> 218,112,000 x 32 = 6,979,584,000
    # + untied embeddings 2*128256*4096 = 1,050,673,152 + final norm 4,096
    assert parameter_count(LLAMA3_8B) == 8_030_261_248  # the published Llama 3 8B count
    # K and V: 2 * 32 layers * 8 heads * 128 dims * 2 bytes = 131,072 bytes per token
    assert kv_bytes_per_token(LLAMA3_8B, 2) == 131_072


def test_gemma3_270m_parameters() -> None:
    # per layer: 640*4*256*2 + 640*1*256*2 + 3*640*2048 + 1280 = 5,571,840 x 18 = 100,293,120
    # + tied embeddings 262144*640 = 167,772,160 + final norm 640
    assert parameter_count(GEMMA3_270M) == 268_065_920
    assert kv_bytes_per_token(GEMMA3_270M, 2) == 2 * 18 * 1 * 256 * 2


def test_llama3_8b_fits_an_a100_80gb() -> None:
    plan = plan_memory(LLAMA3_8B, gpu="A100-80GB", max_model_len=8192, max_num_seqs=16)
    assert plan.weights_bytes == 8_030_261_248 * 2
    assert plan.kv_cache_bytes == 16 * GIB  # 131,072 B x 8192 tokens = 1 GiB per sequence, x 16
    assert plan.budget_bytes == int(79 * GIB * 0.9)
    assert plan.status == "fits"


def test_llama3_8b_on_an_l4_suggests_fewer_sequences() -> None:
    plan = plan_memory(LLAMA3_8B, gpu="L4", max_model_len=8192, max_num_seqs=16)
    # budget 22 GiB * 0.9 = 19.8 GiB; weights 14.96 GiB + overhead 1.5 GiB leave 3.34 GiB,
    # which holds 3 sequences of 1 GiB
    assert plan.status == "does_not_fit"
    assert "--max-num-seqs to 3" in plan.suggestion


def test_tensor_parallel_splits_weights_and_kv() -> None:
    single = plan_memory(LLAMA3_8B, gpu_memory_gib=24, max_model_len=4096, max_num_seqs=8)
    split = plan_memory(
        LLAMA3_8B, gpu_memory_gib=24, max_model_len=4096, max_num_seqs=8, tensor_parallel_size=2
    )
    assert split.weights_bytes == single.weights_bytes // 2
    assert split.kv_cache_bytes == single.kv_cache_bytes // 2


def test_weights_that_cannot_fit_suggest_tensor_parallelism() -> None:
    plan = plan_memory(LLAMA3_8B, gpu="T4", max_model_len=2048, max_num_seqs=4)
    # 14.96 GiB of weights against a 13.5 GiB budget: two GPUs hold 7.48 GiB each
    assert plan.status == "does_not_fit" and "--tensor-parallel-size 2" in plan.suggestion


def test_tight_plan_warns_with_headroom_advice() -> None:
    # gemma 270m: weights 536,131,840 B; KV 18,432 B x 32768 tokens = 576 MiB per sequence
    plan = plan_memory(
        GEMMA3_270M,
        gpu_memory_gib=4,
        gpu_memory_utilization=1.0,
        max_model_len=32768,
        max_num_seqs=3,
    )
    needed = 268_065_920 * 2 + 3 * 18_432 * 32768 + int(1.5 * GIB)
    assert plan.needed_bytes == needed and plan.status == "tight"
    assert "--max-num-seqs" in plan.suggestion


def test_config_loading_and_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"text_config": GEMMA3_270M, "model_type": "gemma3"})
    )
    assert parameter_count(load_model_config(tmp_path)) == 268_065_920
    with pytest.raises(UsageError, match="unknown GPU"):
        plan_memory(GEMMA3_270M, gpu="B9000", max_model_len=512, max_num_seqs=1)
    with pytest.raises(UsageError, match="hidden_size"):
        parameter_count({"num_hidden_layers": 2})
