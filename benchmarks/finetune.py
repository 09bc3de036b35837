"""Prompt-only vs fine-tuned vs both, on the examples, with the embedded local model.

    .venv/bin/python benchmarks/finetune.py          # ticket_router and expense_categoriser
    .venv/bin/python benchmarks/finetune.py --examples ticket_router --steps 30

For each example it scores, on the test split (greedy, zero-shot prompt unless said):

- ``zero-shot``: the uncompiled program;
- ``prompt-only``: BootstrapFewShot (4 bootstrapped + up to 16 labeled demos, as the
  quickstart compiles);
- ``fine-tuned``: Finetune with LocalLoRA (rank 8, q/k/v/o, ``--steps`` steps of batch 4)
  on the training split's labels, deployed zero-shot;
- ``both``: the fine-tuned model, then BootstrapFewShot demos for it
  (``Finetune(fewshot_after=True)``).

Each configuration runs in its own process (so peak memory is its own), with the LM
response cache off, and torch and llama.cpp limited to 2 threads. ``both`` reuses the
adapter trained for ``fine-tuned`` (same data and settings: the finetuner's result is
cached), so its own wall time is the extra few-shot step; the table adds the training
time to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

CONFIGS = ("zero-shot", "prompt-only", "fine-tuned", "both")
# The few-shot settings of the examples' quickstart (prompt-only and both use the same).
FEWSHOT = {"max_bootstrapped_demos": 4, "max_labeled_demos": 16}


def _one(example: str, config: str, steps: int) -> dict[str, Any]:
    """Run one configuration in this process; returns its figures."""
    import importlib

    import lmforge as lf
    from lmforge.optimizers import BootstrapFewShot
    from lmforge.optimizers.finetune import Finetune, LocalLoRA

    module = importlib.import_module(f"lmforge.examples.{example}")
    train, dev, test = module.load("train"), module.load("dev"), module.load("test")
    lm = lf.LM("local/gemma-3-270m")
    program = module.make_program()
    started = time.perf_counter()
    finetune_meta: dict[str, Any] = {}
    if config == "zero-shot":
        compiled = program
        compiled.set_lm(lm)
    elif config == "prompt-only":
        compiled = BootstrapFewShot(**FEWSHOT).compile(
            program, train, metric=module.metric, valset=dev, lm=lm, progress=False
        )
    else:
        lora = LocalLoRA(epochs=100, max_steps=steps, batch_size=4, learning_rate=1e-3, threads=2)
        compiled = Finetune(
            teacher="labels",
            finetuner=lora,
            validation_fraction=0.0,
            fewshot_after=config == "both",
            fewshot_options=FEWSHOT,
        ).compile(program, train, metric=module.metric, lm=lm, progress=False)
        finetune_meta = compiled.artifact_meta["finetune"]
    compile_s = time.perf_counter() - started
    with lf.use(lm=lm):
        result = lf.evaluate(compiled, test, module.metric, progress=False, concurrency=1)
    return {
        "example": example,
        "config": config,
        "test": round(result.score, 3),
        "n_test": len(test),
        "compile_s": round(compile_s, 1),
        "train_s": finetune_meta.get("train_s"),
        "finetune_wall_s": finetune_meta.get("wall_s"),
        "steps": finetune_meta.get("steps"),
        "final_loss": (finetune_meta.get("loss_per_step") or [None])[-1],
        "demos": sum(len(p.demos) for p in compiled.predictors()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", nargs="+", default=["ticket_router", "expense_categoriser"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=30, help="LoRA steps (batch 4)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--one", nargs=2, metavar=("EXAMPLE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import lmforge as lf

        with lf.use(cache=False):  # every configuration is measured without cached answers
            print(json.dumps(_one(args.one[0], args.one[1], args.steps)))
        return
    env = {**os.environ, "LMFORGE_LOCAL_THREADS": "1", "LMFORGE_LOCAL_THREADS_BATCH": "2"}
    rows = []
    header = f"{'example':<20} {'config':<12} {'test':>6} {'compile s':>10} {'train s':>8}"
    print(f"{header} {'peak MB':>8} demos")
    for example in args.examples:
        for config in args.configs:
            command = [
                sys.executable,
                __file__,
                "--one",
                example,
                config,
                "--steps",
                str(args.steps),
            ]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(f"{example:<20} {config:<12} failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            if config == "both":
                tuned = next(
                    (r for r in rows if r["example"] == example and r["config"] == "fine-tuned"),
                    None,
                )
                if tuned is not None:
                    row["compile_s"] = round(row["compile_s"] + tuned["compile_s"], 1)
            rows.append(row)
            train = f"{row['train_s']:.0f}" if row["train_s"] is not None else "-"
            print(
                f"{example:<20} {config:<12} {row['test']:>6.2f} {row['compile_s']:>10.1f} "
                f"{train:>8} {row['peak_rss_mb']:>8} {row['demos']}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
