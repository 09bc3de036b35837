"""``LocalLoRA`` on a tiny random Gemma-3 model (a few MB, seconds on the CPU): the PEFT
adapter and result record, the answer-only loss, determinism with a seed, and reuse of a
finished run. The real embedded model is trained in tests/integration."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # imports torch (seconds); trains for real

torch = pytest.importorskip("torch", reason="needs the 'finetune' extra")
transformers = pytest.importorskip("transformers", reason="needs the 'finetune' extra")
pytest.importorskip("peft", reason="needs the 'finetune' extra")

from lmforge.finetune import TrainingData, TrainingExample  # noqa: E402
from lmforge.optimizers.finetune import LocalLoRA  # noqa: E402
from lmforge.optimizers.finetune._batches import collate, encode, loss  # noqa: E402

WORDS = ("route the ticket : refund crash login price billing technical sales team is").split()  # noqa: SIM905


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder = tmp_path_factory.mktemp("tiny-gemma")
    vocab = {
        "<pad>": 0,
        "<eos>": 1,
        "<bos>": 2,
        "<unk>": 3,
        **{w: i + 4 for i, w in enumerate(WORDS)},
    }
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)]
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    config = transformers.Gemma3TextConfig(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
        sliding_window=8, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.Gemma3ForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _data() -> TrainingData:
    rows = [
        ("refund", "billing"),
        ("crash", "technical"),
        ("login", "technical"),
        ("price", "sales"),
    ]
    examples = [
        TrainingExample(
            "self", ({"role": "user", "content": p},), f"route the ticket : {w} team :", f" {t}"
        )
        for w, t in rows
        for p in [f"route the ticket : {w} team :"]
    ]
    return TrainingData.build(examples, validation_fraction=0.25, seed=0)


def _lora(folder: Path, **kwargs: object) -> LocalLoRA:
    options = {
        "base": str(folder), "runtime": "hosted_vllm/tiny", "epochs": 3, "batch_size": 2,
        "learning_rate": 5e-3, "target_modules": ("q_proj", "v_proj"), "rank": 4,
    }  # fmt: skip
    return LocalLoRA(**{**options, **kwargs})  # type: ignore[arg-type]


def test_answer_only_loss_matches_the_full_loss(tiny_model: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_model))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_model))
    examples = [
        TrainingExample("s", (), "route the ticket : refund team :", " billing"),
        TrainingExample("s", (), "route : crash", " technical team"),
    ]
    encoded, skipped = encode(tokenizer, examples, max_length=64)
    assert skipped == 0 and encoded[0][0][0] == tokenizer.bos_token_id
    assert encoded[0][1][-2:] == [
        tokenizer.convert_tokens_to_ids("billing"),
        tokenizer.eos_token_id,
    ]
    reference = []
    with torch.no_grad():
        fast = loss(torch, model, collate(torch, encoded, 0, torch.device("cpu")))
        for ids, labels in encoded:  # one unpadded row at a time, with transformers' own loss
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            reference.append((float(out.loss), sum(1 for x in labels if x != -100)))
    mean = sum(loss * n for loss, n in reference) / sum(n for _, n in reference)
    assert float(fast) == pytest.approx(mean, rel=1e-5)


def test_training_writes_the_adapter_and_is_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    data = _data()
    first = _lora(tiny_model).train(data, tmp_path / "a", seed=1, progress=False)
    second = _lora(tiny_model).train(data, tmp_path / "b", seed=1, progress=False)
    assert first.meta["loss_per_step"] == second.meta["loss_per_step"]
    assert first.meta["adapter_sha256"] == second.meta["adapter_sha256"]
    assert first.meta["steps"] == 6 and len(first.meta["validation_loss_per_epoch"]) == 3
    assert first.meta["loss_per_step"][-1] < first.meta["loss_per_step"][0]
    assert first.meta["rank"] == 4 and first.meta["target_modules"] == ["q_proj", "v_proj"]
    assert first.meta["training_data_hash"] == data.content_hash
    assert first.meta["peak_memory_mb"]["process_rss_mb"] > 0
    config = json.loads((tmp_path / "a" / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (tmp_path / "a" / "peft" / "adapter_model.safetensors").is_file()
    assert first.lm.model == "hosted_vllm/tiny" and first.adapter_dir == tmp_path / "a" / "peft"
    other_seed = _lora(tiny_model).train(data, tmp_path / "c", seed=2, progress=False)
    assert other_seed.meta["loss_per_step"] != first.meta["loss_per_step"]


def test_a_finished_run_is_reused_and_merge_writes_the_merged_model(
    tiny_model: Path, tmp_path: Path
) -> None:
    data = _data()
    first = _lora(tiny_model, merge=True, max_steps=2).train(data, tmp_path, progress=False)
    assert (tmp_path / "merged" / "config.json").is_file() and first.meta["steps"] == 2
    stamp = (tmp_path / "result.json").stat().st_mtime_ns
    again = _lora(tiny_model, merge=True, max_steps=2).train(data, tmp_path, progress=False)
    assert again.meta == first.meta and (tmp_path / "result.json").stat().st_mtime_ns == stamp
    changed = _lora(tiny_model, merge=True, max_steps=1).train(data, tmp_path, progress=False)
    assert changed.meta["steps"] == 1  # other settings: trained again


def test_examples_longer_than_max_length_are_skipped_not_truncated(
    tiny_model: Path, tmp_path: Path
) -> None:
    from lmforge.errors import UsageError

    with pytest.raises(UsageError, match="max_length"):
        _lora(tiny_model, max_length=3).train(_data(), tmp_path, progress=False)


# -- the GGUF LoRA for llama.cpp --------------------------------------------------------


@pytest.fixture(scope="module")
def peft_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained PEFT adapter on the tiny model, with non-zero B (as after training)."""
    import peft

    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_model))
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    model = peft.get_peft_model(model, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(folder))
    return folder


def test_gguf_lora_has_llama_cpps_names_metadata_and_weights(
    tiny_model: Path, peft_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import subprocess

    import gguf
    from lmforge.optimizers.finetune.gguf_lora import convert_to_gguf
    from safetensors.torch import load_file

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the conversion must not start processes or use the network")

    # No network and no child process (the converter used to pip-download llama.cpp).
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    out = convert_to_gguf(peft_adapter, tiny_model, tmp_path / "out" / "lora.gguf")
    assert out == tmp_path / "out" / "lora.gguf" and not list(out.parent.glob(".*tmp"))

    reader = gguf.GGUFReader(str(out))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "gemma3" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 8.0
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {
        f"blk.{block}.attn_{proj}.weight.lora_{part}"
        for block in (0, 1)
        for proj in ("q", "v")
        for part in ("a", "b")
    }
    weights = load_file(str(peft_adapter / "adapter_model.safetensors"))
    for block, (proj, hf) in itertools.product((0, 1), (("q", "q_proj"), ("v", "v_proj"))):
        for part, peft_part in (("a", "lora_A"), ("b", "lora_B")):
            expected = weights[
                f"base_model.model.model.layers.{block}.self_attn.{hf}.{peft_part}.weight"
            ]
            stored = tensors[f"blk.{block}.attn_{proj}.weight.lora_{part}"]
            assert stored.tensor_type == gguf.GGMLQuantizationType.F32
            assert (stored.data == expected.numpy()).all()
    # llama.cpp's shape checks: A is (rank x inputs), B is (outputs x rank).
    a, b = tensors["blk.0.attn_q.weight.lora_a"].data, tensors["blk.0.attn_q.weight.lora_b"].data
    assert a.shape == (4, 32) and b.shape == (32, 4)


def test_gguf_lora_refuses_what_llama_cpp_cannot_run(
    tiny_model: Path, peft_adapter: Path, tmp_path: Path
) -> None:
    import shutil

    from lmforge.errors import UsageError
    from lmforge.optimizers.finetune.gguf_lora import convert_to_gguf

    llama = tmp_path / "llama"
    llama.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(UsageError, match="vLLM") as info:
        convert_to_gguf(peft_adapter, llama, tmp_path / "a.gguf")
    assert "\n" not in str(info.value)

    dora = tmp_path / "dora"
    shutil.copytree(peft_adapter, dora)
    settings = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**settings, "use_dora": True}))
    with pytest.raises(UsageError, match="use_dora"):
        convert_to_gguf(dora, tiny_model, tmp_path / "b.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp"))
