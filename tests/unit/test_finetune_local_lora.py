"""``LocalLoRA`` on a tiny random Gemma-3 model (a few MB, seconds on the CPU): the PEFT
adapter and result record, the answer-only loss, determinism with a seed, and reuse of a
finished run. The real embedded model is trained in tests/integration."""

from __future__ import annotations

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
