"""Quality on tasks nobody tuned for: baselines and every optimizer on four new datasets.

    .venv/bin/python benchmarks/quality.py --only majority,zero-shot,hand --json base.json
    .venv/bin/python benchmarks/quality.py --quick --json quick.json
    .venv/bin/python benchmarks/quality.py --datasets reviews --only bootstrap,mipro
    .venv/bin/python benchmarks/quality.py --only knn -o k=8 -o balanced=true

For each dataset of ``quality_tasks.TASKS`` (written for this benchmark, see
``benchmarks/data/quality/README.md``), on its test split, with the embedded model
(``lf.LM("local/gemma-3-270m")``, in-process, temperature 0):

* ``majority``: the most frequent train label, predicted for every test row (no LM);
* ``zero-shot``: ``lf.Predict`` of the task's signature, no demos;
* ``hand``: the hand-written 4-shot prompt (an instruction and four train demos);
* each optimizer (``auto``, the ``lmforge compile`` default, then ``labeled``, ``knn``,
  ``bootstrap``, ``random``, ``mipro``, ``instructions``; ``finetune`` only with
  ``--with-finetune``) with its default settings
  (``--quick``: smaller budgets; ``-o NAME=VALUE``: one setting, for every optimizer run),
  compiled on train with dev as valset, seed 0, concurrency 1.

Each row: test accuracy with its 95% Wilson interval, the LM calls the compile made and the
calls the test run made (backend calls counted by ``lf.track``, each method with a fresh
response cache), and wall time. A method that raises is reported as an error row; the
others still run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.optimizers import create
from quality_tasks import TASKS, Task

MODEL = "local/gemma-3-270m"
BASELINES = ("majority", "zero-shot", "hand")
OPTIMIZER_NAMES = ("auto", "labeled", "knn", "bootstrap", "random", "mipro", "instructions")
#: ``--quick`` budgets (the ``--quick`` settings of ``benchmarks/optimizers.py``); without
#: ``--quick`` every optimizer runs with its defaults.
QUICK: dict[str, dict[str, Any]] = {
    "auto": {},
    "labeled": {"k": 8},
    "knn": {"k": 4},
    "bootstrap": {"max_bootstrapped_demos": 4, "max_labeled_demos": 8},
    "random": {"num_candidates": 3, "max_bootstrapped_demos": 4, "max_labeled_demos": 8},
    "mipro": {
        "num_trials": 6,
        "minibatch_size": 10,
        "num_instruction_candidates": 3,
        "num_demo_sets": 3,
        "max_bootstrapped_demos": 4,
        "max_labeled_demos": 4,
    },
    "instructions": {"breadth": 3, "depth": 1},
    "finetune": {},
}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``n`` (95% for ``z=1.96``)."""
    if n <= 0:
        raise ValueError("a Wilson interval needs at least one trial")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_row(correct: int, n: int, **extra: Any) -> dict[str, Any]:
    """A result row: accuracy, its Wilson interval and ``extra`` figures."""
    low, high = wilson(correct, n)
    return {"accuracy": correct / n, "correct": correct, "n": n, "low": low, "high": high, **extra}


def majority_label(task: Task, train: Sequence[lf.Example]) -> str:
    """The most frequent train label (ties go to the label listed first)."""
    counts = Counter(example[task.label] for example in train)
    return max(task.labels, key=lambda label: counts[label])


def methods(with_finetune: bool) -> tuple[str, ...]:
    """Every method name, in table order."""
    return (*BASELINES, *OPTIMIZER_NAMES, *(("finetune",) if with_finetune else ()))


def run_method(
    task: Task,
    method: str,
    lm_for: Callable[[str], lf.LM],
    quick: bool,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One method on one task: compile (optimizers only), then score on test."""
    train, dev, test = task.load("train"), task.load("dev"), task.load("test")
    started = time.perf_counter()
    if method == "majority":
        label = majority_label(task, train)
        correct = sum(example[task.label] == label for example in test)
        return accuracy_row(
            correct, len(test), label=label, compile_calls=0, test_calls=0, seconds=0.0
        )
    lm = lm_for(method)
    extra: dict[str, Any] = {}
    with lf.use(lm=lm, max_concurrency=1), lf.track() as compiling:
        if method == "zero-shot":
            program: lf.Module = task.zero_shot()
        elif method == "hand":
            program = task.hand_written()
        else:
            options = {**(QUICK[method] if quick else {}), **(settings or {})}
            program = create(method, **options).compile(
                task.zero_shot(),
                train,
                metric=task.metric,
                valset=dev,
                lm=lm,
                seed=0,
                progress=False,
                concurrency=1,
            )
            extra["dev"] = program.artifact_meta["scores"].get("dev")  # type: ignore[attr-defined]
            # per call: the fixed demos plus those a selector (KNNFewShot) picks per input
            extra["demos"] = sum(
                len(p.demos) + getattr(p.demo_selector, "k", 0) for p in program.predictors()
            )
    compile_seconds = time.perf_counter() - started
    with lf.use(lm=lm, max_concurrency=1), lf.track() as testing:
        result = lf.evaluate(program, test, task.metric, concurrency=1, progress=False)
    return accuracy_row(
        round(sum(result.scores)),
        len(test),
        failed=result.num_failures,
        compile_calls=compiling.lm_calls,
        test_calls=testing.lm_calls,
        compile_seconds=compile_seconds,
        seconds=time.perf_counter() - started,
        **extra,
    )


def render(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| dataset | method | test accuracy | 95% CI | compile calls | test calls | wall |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dataset, rows in results["datasets"].items():
        for method, row in rows.items():
            if "error" in row:
                lines.append(f"| {dataset} | {method} | error: {row['error']} | | | | |")
                continue
            failed = f" ({row['failed']} failed)" if row.get("failed") else ""
            lines.append(
                f"| {dataset} | {method} | {row['accuracy']:.2f}{failed} | "
                f"{row['low']:.2f}-{row['high']:.2f} | {row['compile_calls']} | "
                f"{row['test_calls']} | {row['seconds']:.0f} s |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--only", help="comma-separated methods (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller optimizer budgets")
    parser.add_argument("--with-finetune", action="store_true", help="also run finetune")
    parser.add_argument("--json", help="also write every figure here (after each method)")
    parser.add_argument(
        "-o",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an optimizer setting (JSON value, else text) for every optimizer run",
    )
    args = parser.parse_args(argv)
    args.settings = dict(_setting(parser, item) for item in args.settings)
    args.datasets = [d for d in args.datasets.split(",") if d]
    for name in args.datasets:
        if name not in TASKS:
            parser.error(f"unknown dataset {name!r}; choose from {', '.join(TASKS)}")
    known = methods(args.with_finetune)
    args.only = [m for m in args.only.split(",") if m] if args.only else list(known)
    for name in args.only:
        if name not in known:
            hint = " (add --with-finetune)" if name == "finetune" else ""
            parser.error(f"unknown method {name!r}{hint}; choose from {', '.join(known)}")
    return args


def _setting(parser: argparse.ArgumentParser, item: str) -> tuple[str, Any]:
    name, sep, text = item.partition("=")
    if not sep or not name:
        parser.error(f"-o takes NAME=VALUE, got {item!r}")
    try:
        return name, json.loads(text)
    except ValueError:
        return name, text


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "model": MODEL,
        "quick": args.quick,
        "settings": args.settings,
        "command": " ".join(["benchmarks/quality.py", *(sys.argv[1:] if argv is None else argv)]),
        "cpus": os.cpu_count(),
        "load_before": round(os.getloadavg()[0], 2),
        "datasets": {},
    }

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str), "utf-8")

    from lmforge.lm.local_models import models_dir

    # A fresh response cache per method, so every count is real calls; the assembled
    # model file stays where it is.
    os.environ["LMFORGE_MODELS_DIR"] = str(models_dir())
    with tempfile.TemporaryDirectory(prefix="lmforge-quality-cache-") as cache_root:
        os.environ["LMFORGE_CACHE_DIR"] = cache_root
        for dataset in args.datasets:
            task = TASKS[dataset]
            rows: dict[str, Any] = results["datasets"].setdefault(dataset, {})

            def lm_for(method: str, dataset: str = dataset) -> lf.LM:
                cache = Path(cache_root) / f"{dataset}-{method}"
                return lf.LM(MODEL, cache=cache, temperature=0.0)

            for method in args.only:
                try:
                    rows[method] = run_method(task, method, lm_for, args.quick, args.settings)
                except Exception as exc:  # reported in the table; the other rows still run
                    rows[method] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                row = rows[method]
                summary = row.get("error") or (
                    f"{row['accuracy']:.2f} [{row['low']:.2f}, {row['high']:.2f}], "
                    f"{row['compile_calls']} + {row['test_calls']} calls, {row['seconds']:.0f} s"
                )
                print(f"  {dataset} {method}: {summary}", flush=True)
                save()
    results["load_after"] = round(os.getloadavg()[0], 2)
    save()
    print()
    print(
        f"{MODEL}; {results['cpus']} CPUs, load average {results['load_before']} before / "
        f"{results['load_after']} after; {'quick' if args.quick else 'default'} settings"
    )
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
