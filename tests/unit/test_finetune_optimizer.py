"""``Finetune`` with fake models and a fake finetuner: teacher traces -> training data in
the run directory -> the tuned program and its artifact (adapter files carried along);
zero passing traces, missing extras, and LoRA adapters on ``local/`` LMs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.errors import ArtifactError, MissingExtraError, UsageError
from lmforge.finetune import Finetuner, TrainingData, TunedModel
from lmforge.optimizers.finetune import Finetune, LocalLoRA, OpenAIFinetune
from optimizer_fakes import TRAIN, VAL, Router


class FakeFinetuner:
    """Records what it was asked to train on; the tuned model is a fake that knows every
    team (so the tuned program scores higher than the untuned one)."""

    name = "fake"

    def __init__(self) -> None:
        self.trained: list[TrainingData] = []

    def base_lm(self) -> lf.LM:
        return Router().lm(model="test/base")

    def config(self) -> dict[str, Any]:
        return {"rank": 4}

    def train(
        self, data: TrainingData, workdir: Path, *, seed: int = 0, progress: bool = True
    ) -> TunedModel:
        self.trained.append(data)
        adapter = workdir / "peft"
        adapter.mkdir(parents=True, exist_ok=True)
        (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
        (adapter / "adapter_model.safetensors").write_bytes(b"weights")
        meta = {"rank": 4, "loss_per_step": [1.0, 0.5], "training_data_hash": data.content_hash}
        return TunedModel(Router().lm(model="test/tuned"), "test/base", meta, adapter)


def metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
    return bool(prediction.team == example.team)


def test_fake_finetuner_satisfies_the_protocol() -> None:
    assert isinstance(FakeFinetuner(), Finetuner)
    assert isinstance(LocalLoRA(), Finetuner)
    assert isinstance(OpenAIFinetune(), Finetuner)


def test_teacher_traces_become_data_and_the_program_points_at_the_tuned_model(
    tmp_path: Path,
) -> None:
    finetuner = FakeFinetuner()
    teacher_model = Router(needs_demos=True)  # right only with demos: the few-shot teacher
    compiled = Finetune(finetuner=finetuner, max_labeled_demos=2).compile(
        lf.Predict("ticket -> team"), TRAIN, metric=metric, valset=VAL,
        lm=teacher_model.lm(), run_dir=tmp_path / "run", progress=False,
    )  # fmt: skip
    (data,) = finetuner.trained
    # "tricky" tickets are answered wrong by the teacher: their traces are dropped
    assert len(data.examples) == 6
    assert all("tricky" not in e.prompt.rsplit("Ticket:", 1)[1] for e in data.examples)
    assert all(e.completion.startswith(" ") for e in data.examples)  # completion adapter target
    assert all("Team: " not in e.prompt.rsplit("Ticket:", 1)[0] for e in data.examples)  # no demos
    written = tmp_path / "run" / "finetune" / "data"
    assert json.loads((written / "data.json").read_text())["content_hash"] == data.content_hash
    assert compiled.predictors()[0].lm.model == "test/tuned"
    assert compiled.predictors()[0].demos == ()
    meta = compiled.artifact_meta["finetune"]
    assert meta["training_data"]["content_hash"] == data.content_hash
    assert meta["traces"]["passed"] == 6 and meta["traces"]["failed"] == 2
    assert meta["rank"] == 4 and meta["tuned_model"] == "test/tuned"
    assert compiled.artifact_meta["scores"]["dev"] == 1.0

    out = tmp_path / "out" / "router.json"
    compiled.save(out)
    saved = json.loads(out.read_text())
    relative = saved["meta"]["finetune"]["adapter_path"]
    assert (
        relative.startswith("adapters/")
        and (out.parent / relative / "adapter_config.json").is_file()
    )
    reloaded = lf.load(out)
    assert Path(reloaded.artifact_meta["finetune"]["adapter_path"]).is_dir()


def test_rerun_with_the_same_run_dir_does_not_call_the_teacher_again(tmp_path: Path) -> None:
    def compile_once() -> Router:
        teacher_model = Router(needs_demos=True)
        Finetune(finetuner=FakeFinetuner(), max_labeled_demos=2).compile(
            lf.Predict("ticket -> team"), TRAIN, metric=metric, lm=teacher_model.lm(),
            run_dir=tmp_path / "run", progress=False,
        )  # fmt: skip
        return teacher_model

    assert len(compile_once().requests) == len(TRAIN)
    assert compile_once().requests == []


def test_labels_teacher_and_fewshot_after(tmp_path: Path) -> None:
    finetuner = FakeFinetuner()
    task_model = Router(needs_demos=True)
    compiled = Finetune(finetuner=finetuner, teacher="labels", fewshot_after=True).compile(
        lf.Predict("ticket -> team"), TRAIN, metric=metric, valset=VAL, lm=task_model.lm(),
        progress=False, run_dir=tmp_path / "run",
    )  # fmt: skip
    assert len(finetuner.trained[0].examples) == len(TRAIN)
    assert task_model.requests == []  # labels need no teacher calls; the tuned model answers
    kinds = [c["kind"] for c in compiled.artifact_meta["candidates"]]
    assert kinds == ["finetune", "finetune+fewshot"]
    assert compiled.artifact_meta["finetune"]["fewshot_after"] is True


def test_zero_passing_traces_is_a_clear_error(tmp_path: Path) -> None:
    always_wrong = lf.testing.FunctionLM(lambda request: " nobody", model_type="text")
    finetuner = FakeFinetuner()
    with pytest.raises(UsageError, match="none of the 8 training examples gave a teacher trace"):
        Finetune(finetuner=finetuner).compile(
            lf.Predict("ticket -> team"), TRAIN, metric=metric, lm=always_wrong, progress=False
        )
    assert finetuner.trained == []


def test_options_are_checked() -> None:
    with pytest.raises(UsageError, match="unknown finetuner"):
        Finetune(finetuner="nope")
    with pytest.raises(UsageError, match="pass metric"):
        Finetune(finetuner=FakeFinetuner()).compile(lf.Predict("a -> b"), TRAIN)
    with pytest.raises(UsageError, match="needs runtime"):
        LocalLoRA(base="/some/hf/folder")
    with pytest.raises(UsageError, match="no built-in finetuner"):
        Finetune().compile(
            lf.Predict("ticket -> team"), TRAIN, metric=metric, lm=Router().lm(), progress=False
        )


def test_missing_extra_names_finetune(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    data = TrainingData.build(_one_example())
    with pytest.raises(MissingExtraError, match=r"lmforge\[finetune\]") as info:
        LocalLoRA().train(data, tmp_path)
    assert info.value.extra == "finetune" and "torch" in str(info.value)
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingExtraError, match=r"lmforge\[finetune\]"):
        OpenAIFinetune(base_url="http://127.0.0.1:9/v1").train(data, tmp_path)


def _one_example() -> list[Any]:
    from lmforge.finetune import TrainingExample

    return [TrainingExample("self", ({"role": "user", "content": "q"},), "q", " a")]


# -- LoRA adapters on local/ LMs ----------------------------------------------------------


def test_lora_is_part_of_the_request_and_the_backend_settings(tmp_path: Path) -> None:
    adapter = tmp_path / "lora.gguf"
    adapter.write_bytes(b"adapter-1")
    base = lf.LM("local/gemma-3-270m")
    tuned = lf.LM("local/gemma-3-270m", lora=adapter)
    assert "lora_sha256" not in base.request(prompt="x").params
    key = tuned.request(prompt="x").cache_key()
    assert key != base.request(prompt="x").cache_key()
    assert tuned.backend.load_settings().lora == str(adapter.resolve())
    assert base.backend.load_settings().lora is None
    adapter.write_bytes(b"adapter-2, retrained")  # new content: answers are not reused
    assert tuned.request(prompt="x").cache_key() != key
    with pytest.raises(UsageError, match="local/"):
        lf.LM("openai/gpt-4o-mini", lora=adapter)


def test_artifact_carries_the_adapter_and_checks_it(tmp_path: Path) -> None:
    adapter = tmp_path / "train" / "lora.gguf"
    adapter.parent.mkdir()
    adapter.write_bytes(b"gguf-lora-bytes")
    program = lf.Predict("ticket -> team", lm=lf.LM("local/gemma-3-270m", lora=adapter))
    out = tmp_path / "out" / "router.json"
    program.save(out)
    state = json.loads(out.read_text())["predictors"]["self"]["lm"]
    assert state["lora"].startswith("adapters/") and not Path(state["lora"]).is_absolute()
    copied = out.parent / state["lora"]
    assert copied.read_bytes() == b"gguf-lora-bytes"
    adapter.unlink()  # the artifact no longer needs the training folder
    loaded = lf.load(out)
    assert loaded.predictors()[0].lm.lora == copied.resolve()
    loaded.save(tmp_path / "elsewhere" / "router.json")  # re-saving copies it again
    assert (tmp_path / "elsewhere" / state["lora"]).is_file()
    copied.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="changed after the artifact was saved"):
        lf.load(out)
    copied.unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        lf.load(out)
