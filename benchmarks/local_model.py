"""Benchmark of the embedded local model (``local/gemma-3-270m``) on this machine.

Prints: model-file preparation and load time; prompt-processing and generation speed on a
few-shot classification prompt; calls per second and milliseconds per call of a few-shot
``Predict`` answering by grammar-constrained generation and by label scoring (the same
prompts); and the accuracy of the ``Literal``-typed ticket router over the whole test
split, zero-shot and few-shot, both ways, with the parse-failure count of generation (it
must be 0).

    python benchmarks/local_model.py [--threads-batch N] [--json]

The LM response cache is off for every measurement. Figures depend on what else runs on
the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import lmforge as lf
from lmforge.examples import ticket_router
from lmforge.lm.local import LocalBackend, loaded_models

MODEL = "local/gemma-3-270m"
DEMOS = 16


def _loaded_llama(backend: LocalBackend, settings: Any) -> Any:
    from lmforge.lm import local

    return local._MODELS[(str(backend.path.resolve()), settings)].llama


def few_shot_program() -> lf.Predict:
    program = ticket_router.make_program()
    program.demos = ticket_router.load("train")[:DEMOS]
    return program


def measure(threads_batch: int | None, repeats: int) -> dict[str, Any]:
    options = {"n_threads_batch": threads_batch} if threads_batch else {}
    lm = lf.LM(MODEL, cache=False, **options)
    backend = lm.backend
    assert isinstance(backend, LocalBackend)
    figures: dict[str, Any] = {"model": MODEL, "loadavg_before": os.getloadavg()[0]}

    started = time.perf_counter()
    path = backend.path
    figures["file_prepare_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    settings = backend.warm_up(lm.defaults)
    figures["load_s"] = round(time.perf_counter() - started, 3)
    figures["settings"] = {
        "n_ctx": settings.n_ctx, "n_threads": settings.n_threads,
        "n_threads_batch": settings.n_threads_batch,
    }  # fmt: skip
    figures["file"] = str(path)
    llama = _loaded_llama(backend, settings)

    # Prompt processing: the whole few-shot prompt, nothing reused from the KV cache.
    program = few_shot_program()
    test = ticket_router.load("test")
    prompt = program.format({"ticket": test[0].ticket}, lm=lm).text or ""
    tokens = llama.tokenize(prompt.encode(), add_bos=True)
    prompt_rates = []
    for _ in range(repeats):
        llama.reset()
        started = time.perf_counter()
        llama.create_completion(prompt=tokens, max_tokens=1, temperature=0.0)
        prompt_rates.append(len(tokens) / (time.perf_counter() - started))
    figures["prompt_tokens"] = len(tokens)
    figures["prompt_tok_s"] = round(statistics.median(prompt_rates), 1)

    # Generation: 64 free tokens after the (cached) prompt.
    gen_rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = llama.create_completion(prompt=tokens, max_tokens=64, temperature=0.0, stop=[])
        elapsed = time.perf_counter() - started
        gen_rates.append(out["usage"]["completion_tokens"] / elapsed)
    figures["generation_tok_s"] = round(statistics.median(gen_rates), 1)

    # Calls: the few-shot classifier over the test split, by constrained generation and by
    # label scoring; one call first so that both start with the demos in the KV cache.
    with lf.use(lm=lm):
        for decode in ("generate", "score"):
            program.decode = decode
            program(ticket=test[-1].ticket)
            started = time.perf_counter()
            for example in test:
                program(ticket=example.ticket)
            elapsed = time.perf_counter() - started
            figures[f"few_shot_calls_s_{decode}"] = round(len(test) / elapsed, 2)
            figures[f"few_shot_ms_per_call_{decode}"] = round(1000 * elapsed / len(test), 1)

    # Acceptance: every output of the Literal-typed router parses, over the whole split,
    # and scoring is about as accurate as generation.
    with lf.use(lm=lm):
        for name, candidate in (("zero_shot", ticket_router.make_program()), ("few_shot", program)):
            for decode in ("generate", "score"):
                candidate.decode = decode
                result = lf.evaluate(
                    candidate, test, ticket_router.metric, concurrency=1, progress=False
                )
                figures[f"{name}_{decode}_parse_failures"] = result.num_failures
                figures[f"{name}_{decode}_score"] = round(result.score, 3)
                figures["test_examples"] = result.n
    figures["loadavg_after"] = os.getloadavg()[0]
    figures["models_loaded"] = len(loaded_models())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads-batch", type=int, default=None, help="n_threads_batch")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the speed runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure(args.threads_batch, args.repeats)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    s, f = figures["settings"], figures
    lines = [
        ("model", f"{f['model']} (n_ctx {s['n_ctx']}, threads: {s['n_threads']} generation, "
                  f"{s['n_threads_batch']} prompt)"),
        ("load average", f"{f['loadavg_before']:.2f} before, {f['loadavg_after']:.2f} after"),
        ("model file ready", f"{f['file_prepare_s']:.2f} s"),
        ("model load", f"{f['load_s']:.2f} s"),
        ("prompt processing", f"{f['prompt_tok_s']:.0f} tok/s ({f['prompt_tokens']}-token "
                              f"{DEMOS}-shot prompt, no KV reuse)"),
        ("generation", f"{f['generation_tok_s']:.0f} tok/s (64 tokens, greedy)"),
    ]  # fmt: skip
    for decode, how in (("generate", "grammar-constrained generation"), ("score", "label scoring")):
        lines.append((
            f"few-shot {decode}",
            f"{f[f'few_shot_calls_s_{decode}']:.2f} calls/s, "
            f"{f[f'few_shot_ms_per_call_{decode}']:.0f} ms/call ({DEMOS}-shot ticket router, "
            f"{how}, prompt prefix reused)",
        ))  # fmt: skip
    for name in ("zero_shot", "few_shot"):
        for decode in ("generate", "score"):
            key = f"{name}_{decode}"
            lines.append((
                f"{name.replace('_', '-')} {decode}",
                f"accuracy {100 * f[key + '_score']:.0f}%, parse failures "
                f"{f[key + '_parse_failures']}/{f['test_examples']}",
            ))  # fmt: skip
    for label, value in lines:
        print(f"{label:<20} {value}")


if __name__ == "__main__":
    main()
