"""Steps of tests/e2e/vllm_cpu.sh that are easier in Python.

convert GGUF HF_DIR        (vLLM venv: torch + transformers + gguf) GGUF -> bf16 HF folder
compile WORKDIR            (project venv) few-shot sentiment program -> artifact + JSONL
check-config VLLM_YAML     (vLLM venv) every key is an option of `vllm serve`
call URL TEST_JSONL        (project venv) typed endpoint + OpenAI SDK, schema-checked
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

LABELS = ("positive", "negative")
TRAIN = [
    ("I loved every minute of it.", "positive"),
    ("This was a complete waste of money.", "negative"),
    ("The staff were friendly and helpful.", "positive"),
    ("It broke after two days.", "negative"),
]
DEV = [
    ("What a wonderful surprise!", "positive"),
    ("Terrible service, never again.", "negative"),
    ("Absolutely fantastic food.", "positive"),
    ("The room was dirty and cold.", "negative"),
    ("Great value and quick delivery.", "positive"),
    ("I want a refund, this is awful.", "negative"),
]
TEST = [
    ("The concert was amazing.", "positive"),
    ("My order arrived broken.", "negative"),
    ("Such a lovely day at the park.", "positive"),
    ("The worst movie I have seen.", "negative"),
]


def convert(gguf: str, out: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # GGUF weights are dequantised on load; drop the marker to save
        quantizer.remove_quantization_config(model)
    import torch

    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    # Gemma needs BOS first (llama.cpp adds it); the tokenizer rebuilt from GGUF does not,
    # and without it the model's few-shot answers collapse onto one label.
    tokenizer.add_bos_token = True
    tokenizer.save_pretrained(out)
    reloaded = AutoTokenizer.from_pretrained(out)
    if reloaded("a").input_ids[0] != reloaded.bos_token_id:
        raise SystemExit(f"the saved tokenizer in {out} does not add BOS")
    print(f"converted {gguf} -> {out} in {time.time() - started:.0f} s")


def compile_program(workdir: str) -> None:
    import lmforge as lf

    work = Path(workdir)
    sig = lf.Signature.parse(
        f"sentence: str -> sentiment: Literal{list(LABELS)!r}",
    ).with_instructions("Classify the sentiment of the sentence.")
    program = lf.Predict(sig, lm=lf.LM("local/gemma-3-270m", cache=False), temperature=0.0)
    # Labeled few-shot compile: one demo per label first, then the rest, in a fixed order.
    program.demos = [{"sentence": s, "sentiment": label} for s, label in TRAIN]
    program.save(
        work / "sentiment@gemma-3-270m.json", meta={"scores": {"note": "few-shot, 4 demos"}}
    )
    for name, rows in (("dev.jsonl", DEV), ("test.jsonl", TEST)):
        (work / name).write_text(
            "".join(json.dumps({"sentence": s, "sentiment": y}) + "\n" for s, y in rows)
        )
    print(f"compiled {work / 'sentiment@gemma-3-270m.json'}")


def check_config(path: str) -> None:
    import importlib

    import yaml

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef]
    # The module holding `vllm serve`'s parser moved between vLLM releases.
    for name in ("vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args"):
        try:
            make_arg_parser = importlib.import_module(name).make_arg_parser
            break
        except ImportError:
            continue
    else:
        raise SystemExit("cannot find vllm serve's argument parser in this vLLM")

    parser = make_arg_parser(FlexibleArgumentParser())
    known = {option for action in parser._actions for option in action.option_strings}
    keys = list(yaml.safe_load(Path(path).read_text()))
    unknown = [k for k in keys if k != "model" and f"--{k}" not in known]
    if unknown:
        raise SystemExit(f"vllm.yaml has keys vllm serve does not know: {unknown}")
    print(f"all {len(keys)} vllm.yaml keys are vllm serve options")


def call(url: str, test_jsonl: str) -> None:
    import httpx
    import openai

    key = os.environ["LMFORGE_API_KEYS"].split(",")[0]
    headers = {"Authorization": f"Bearer {key}"}
    rows = [json.loads(line) for line in Path(test_jsonl).read_text().splitlines() if line.strip()]
    correct = 0
    for row in rows:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/programs/sentiment",
            json={"sentence": row["sentence"]},
            headers=headers,
            timeout=120,
        )
        response.raise_for_status()
        answer = response.json()
        assert set(answer) == {"sentiment"} and answer["sentiment"] in LABELS, answer
        correct += answer["sentiment"] == row["sentiment"]
        print(
            f"typed: {row['sentence']!r} -> {answer['sentiment']} "
            f"({(time.perf_counter() - started) * 1000:.0f} ms)"
        )
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model="sentiment", messages=[{"role": "user", "content": rows[0]["sentence"]}]
    )
    content = reply.choices[0].message.content
    assert content in LABELS, content
    stream = client.chat.completions.create(
        model="sentiment", messages=[{"role": "user", "content": rows[1]["sentence"]}], stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed in LABELS, streamed
    print(f"openai sdk: {content!r}, streamed {streamed!r}; typed accuracy {correct}/{len(rows)}")
    # The compiled few-shot program gets these right on the embedded model through
    # llama.cpp; far fewer through vLLM means the served model or prompt is off.
    assert correct >= len(rows) - 1, f"typed accuracy {correct}/{len(rows)} is too low"
    metrics = httpx.get(f"{url}/metrics", headers=headers).text
    assert 'lmforge_requests_total{program="sentiment",route="call",status="200"}' in metrics


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"convert": convert, "compile": compile_program, "check-config": check_config, "call": call}[
        command
    ](*args)
