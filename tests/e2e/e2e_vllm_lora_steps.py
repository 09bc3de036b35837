"""Steps of tests/e2e/vllm_lora_cpu.sh that are easier in Python (all in the project venv).

artifact OUT_DIR                        the fine-tuned artifact compile wrote; checks its
                                        finetune meta and prints its path
peft-check HF_DIR ARTIFACT TEST N JSON  the artifact's PEFT adapter loads on the converted HF
                                        base with peft; its label choices on N test tickets
                                        (adapter on and off) are written to JSON
call URL VLLM_URL BUNDLE TEST N JSON    vLLM lists the bundle's LoRA module; the typed endpoint
                                        answers N test tickets as the LoRA module does (same
                                        prompts sent straight to vLLM), clearly better than
                                        the base model served by the same vLLM
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROGRAM = "ticket_router"
# One request at a time: a LoRA request through vLLM's CPU backend takes 1.5-3 s here, and
# a first batch of several LoRA sequences on a fresh engine has taken minutes.
CONCURRENCY = 1


def _rows(path: str, limit: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows[:limit]


def _finetune_meta(path: Path) -> Mapping[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    meta = document.get("meta") if isinstance(document, dict) else None
    finetune = meta.get("finetune") if isinstance(meta, dict) else None
    return finetune if isinstance(finetune, dict) else None


def artifact(out_dir: str) -> None:
    found = [p for p in sorted(Path(out_dir).glob("*.json")) if _finetune_meta(p)]
    if len(found) != 1:
        raise SystemExit(f"expected one fine-tuned artifact in {out_dir}, found {found}")
    path = found[0]
    meta = _finetune_meta(path)
    assert meta is not None
    adapter = Path(str(meta["adapter_path"]))
    adapter = adapter if adapter.is_absolute() else path.parent / adapter
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter / name).is_file():
            raise SystemExit(f"the artifact's adapter folder {adapter} has no {name}")
    losses = meta.get("loss_per_step") or []
    sys.stderr.write(
        f"fine-tuned: {meta.get('steps')} steps, rank {meta.get('rank')}, loss "
        f"{losses[0] if losses else '?'} -> {losses[-1] if losses else '?'}, "
        f"train {meta.get('train_s')} s, adapter {adapter}\n"
    )
    print(path)


def _prompts(artifact_path: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The deployed completion prompts for ``rows`` and the allowed labels."""
    import lmforge as lf
    from lmforge.fieldtypes import is_enum_like

    program = lf.load(artifact_path)
    ((_, predictor),) = program.named_predictors()
    (output,) = predictor.signature.output_fields
    labels = [str(c) for c in is_enum_like(output.annotation) or ()]
    texts = []
    for row in rows:
        prompt = predictor.format({"ticket": row["ticket"]}, lm=predictor.lm)
        if prompt.text is None:
            raise SystemExit("the tuned program should render completion prompts (base model)")
        texts.append(prompt.text)
    return texts, labels


def peft_check(hf_dir: str, artifact_path: str, test: str, limit: str, out: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # the machine is shared; one forward pass per label is cheap
    meta = _finetune_meta(Path(artifact_path))
    assert meta is not None
    adapter = Path(str(meta["adapter_path"]))
    adapter = adapter if adapter.is_absolute() else Path(artifact_path).parent / adapter
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    base = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    model.eval()
    config = model.peft_config["default"]
    lora_layers = [n for n, _ in model.named_modules() if n.endswith("lora_A.default")]
    if config.r != meta["rank"] or sorted(config.target_modules) != sorted(meta["target_modules"]):
        raise SystemExit(f"adapter config {config} does not match the artifact's meta")
    layers = base.config.num_hidden_layers
    if len(lora_layers) != layers * len(meta["target_modules"]):
        raise SystemExit(f"{len(lora_layers)} LoRA layers loaded, expected {layers} x targets")
    print(
        f"peft: {type(model).__name__} r={config.r} on {sorted(config.target_modules)}, "
        f"{len(lora_layers)} LoRA layers, loaded in {time.perf_counter() - started:.1f} s"
    )
    rows = _rows(test, int(limit))
    prompts, labels = _prompts(artifact_path, rows)
    # Candidates as the prompt continues: a space, then the label (as in the training data).
    candidates = [tokenizer(" " + label, add_special_tokens=False).input_ids for label in labels]

    def choose(prompt: str) -> str:
        """The label with the highest log-probability after ``prompt``."""
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            last = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        scores = []
        for tokens in candidates:
            score = float(last[tokens[0]])
            if len(tokens) > 1:  # the rest of a multi-token label
                full = torch.cat([ids, torch.tensor([tokens])], dim=1)
                with torch.no_grad():
                    logits = model(input_ids=full).logits[0, ids.shape[1] : -1]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                score += float(sum(logprobs[i, t] for i, t in enumerate(tokens[1:])))
            scores.append(score)
        return labels[max(range(len(labels)), key=scores.__getitem__)]

    results = []
    for row, prompt in zip(rows, prompts, strict=True):
        tuned = choose(prompt)
        with model.disable_adapter():
            untuned = choose(prompt)
        results.append(
            {"ticket": row["ticket"], "team": row["team"], "peft": tuned, "base": untuned}
        )
    tuned_ok = sum(r["peft"] == r["team"] for r in results)
    base_ok = sum(r["base"] == r["team"] for r in results)
    print(f"peft label choice on {len(rows)} test tickets: base {base_ok}, base+adapter {tuned_ok}")
    if tuned_ok <= base_ok:
        raise SystemExit("the adapter does not improve the base model under transformers + peft")
    Path(out).write_text(json.dumps(results, indent=1))


def _base_program(bundle: Path) -> Any:
    """The bundle's program pointed at the base model vLLM serves (not the LoRA module)."""
    from lmforge.targets.bundle import _vllm_lm, load_bundle, read_serving

    program, _ = load_bundle(bundle)
    serving = read_serving(bundle)
    backend = serving["backend"]
    for name, predictor in program.named_predictors():
        spec = {**serving["predictors"][name], "served_model": backend["served_model"]}
        predictor.lm = _vllm_lm(backend, spec, int(serving["max_tokens"]))
    return program


def call(url: str, vllm_url: str, bundle_dir: str, test: str, limit: str, peft_json: str) -> None:
    import httpx
    from lmforge.targets.bundle import load_bundle, read_serving

    bundle = Path(bundle_dir)
    serving = read_serving(bundle)
    served = {spec["served_model"] for spec in serving["predictors"].values()}
    base_name = serving["backend"]["served_model"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    lora_name = manifest["adapter"]["name"]
    if served != {lora_name}:
        raise SystemExit(f"serving.json sends predictors to {served}, not the LoRA {lora_name}")

    vllm_headers = {"Authorization": f"Bearer {os.environ['VLLM_API_KEY']}"}
    listed = httpx.get(f"{vllm_url}/v1/models", headers=vllm_headers, timeout=30).json()["data"]
    by_id = {m["id"]: m for m in listed}
    if lora_name not in by_id or by_id[lora_name].get("parent") != base_name:
        raise SystemExit(f"vLLM does not serve the LoRA module {lora_name}: {listed}")
    print(f"vLLM serves {sorted(by_id)}; {lora_name} from {by_id[lora_name].get('root')}")

    rows = _rows(test, int(limit))
    key = os.environ["LMFORGE_API_KEYS"].split(",")[0]

    def ask(row: dict[str, Any]) -> str:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/programs/{PROGRAM}",
            json={"ticket": row["ticket"]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        )
        response.raise_for_status()
        answer = response.json()
        assert set(answer) == {"team"}, answer
        print(
            f"typed: {row['ticket'][:60]!r} -> {answer['team']} (label {row['team']}, "
            f"{(time.perf_counter() - started) * 1000:.0f} ms)",
            flush=True,
        )
        return str(answer["team"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        typed = list(pool.map(ask, rows))
    lora_program, _ = load_bundle(bundle)
    base_program = _base_program(bundle)
    inputs = [{"ticket": r["ticket"]} for r in rows]

    def teams(program: Any) -> list[str]:
        answers = program.batch(inputs, concurrency=CONCURRENCY, raise_errors=True)
        return [str(answer.team) for answer in answers]

    direct, base = teams(lora_program), teams(base_program)
    print(f"{3 * len(rows)} calls through vLLM in {time.perf_counter() - started:.0f} s")
    peft = {r["ticket"]: r["peft"] for r in json.loads(Path(peft_json).read_text())}
    labels = [r["team"] for r in rows]

    def score(answers: list[str]) -> int:
        return sum(a == y for a, y in zip(answers, labels, strict=True))

    def agree(a: list[str], b: list[str]) -> int:
        return sum(x == y for x, y in zip(a, b, strict=True))

    peft_answers = [str(peft.get(r["ticket"])) for r in rows]
    n = len(rows)
    print(
        f"zero-shot accuracy on {n} test tickets through vLLM: base model {score(base)}/{n}, "
        f"LoRA module {score(direct)}/{n}, typed endpoint {score(typed)}/{n}; typed answers "
        f"agree with the LoRA module on {agree(typed, direct)}/{n}, with the base model on "
        f"{agree(typed, base)}/{n}, with transformers+peft on {agree(typed, peft_answers)}/{n}"
    )
    print(f"labels:          {labels}\ntyped endpoint:  {typed}\nLoRA module:     {direct}")
    print(f"base model:      {base}\ntransformers+peft: {peft_answers}")
    # bf16 on the CPU with prefix caching is not bit-reproducible: near-ties between two
    # teams may flip from one request to the next, so agreement is asked of most tickets.
    most = -(-3 * n // 4)
    if agree(typed, direct) < most or agree(typed, direct) <= agree(typed, base) + n // 4:
        raise SystemExit("the typed endpoint's answers do not follow the LoRA module's")
    if score(typed) < score(base) + max(2, n // 4):
        raise SystemExit("the served answers are not clearly better than the base model's")
    if agree(typed, peft_answers) < most:
        raise SystemExit("vLLM's LoRA answers disagree with transformers + peft too often")
    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    assert f'lmforge_requests_total{{program="{PROGRAM}",route="call",status="200"}}' in metrics


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"artifact": artifact, "peft-check": peft_check, "call": call}[command](*args)
