"""Optimizers on the examples with the embedded local model, next to DSPy's on the same data.

    .venv/bin/python benchmarks/optimizers.py --quick                     # lmforge only
    DSPY_PYTHON=$(bash benchmarks/_dspy_env.sh)
    .venv/bin/python benchmarks/optimizers.py --quick --dspy-python "$DSPY_PYTHON" --json out.json
    .venv/bin/python benchmarks/optimizers.py --examples tickets --optimizers bootstrap,mipro

lmforge side (in this process, ``lf.LM("local/gemma-3-270m")`` run in-process, each
optimizer with a fresh LM response cache so its call count is every call it needed):

* baselines: zero-shot, and a hand-written 4-shot completion prompt (four fixed labeled
  train examples, one per class, through ``lf.Predict`` with ``CompletionAdapter``);
* each optimizer (``labeled``, ``bootstrap``, ``random``, ``mipro``, ``instructions``)
  compiled on the train split with the dev split as valset, seed 0, concurrency 1; then
  scored on the test split. "calls" are the backend LM calls the compile made (the
  ``compile_info`` of the result), prompt-model proposals included.

DSPy side (``--dspy-python`` or ``$DSPY_PYTHON``; skipped when neither is given): the same
model file served by llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``),
DSPy's ``LabeledFewShot``, ``BootstrapFewShot`` and ``MIPROv2`` on the same splits and
settings, LM calls counted from ``lm.history`` (cache off), test predictions that fail to
parse scored 0 (as lmforge's failures are).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from vs_dspy import llama_server  # noqa: E402

MODEL = "local/gemma-3-270m"

#: example name -> (module, input field, label field, train rows of the hand-written prompt)
EXAMPLES: dict[str, tuple[str, str, str, tuple[int, ...]]] = {
    # billing, technical, account, sales (train lines 1, 2, 3, 5)
    "tickets": ("lmforge.examples.ticket_router", "ticket", "team", (0, 1, 2, 4)),
    # supplies, software, travel, meals (train lines 1-4)
    "expenses": ("lmforge.examples.expense_categoriser", "line", "category", (0, 1, 2, 3)),
}
LMFORGE_OPTIMIZERS = ("labeled", "bootstrap", "random", "mipro", "instructions")
#: lmforge optimizer -> DSPy's counterpart (the others have none in this benchmark)
DSPY_PAIRS = {"labeled": "LabeledFewShot", "bootstrap": "BootstrapFewShot", "mipro": "MIPROv2"}


def settings(quick: bool) -> dict[str, dict[str, Any]]:
    """Optimizer settings shared by both frameworks where they have the same knob."""
    if quick:
        return {
            "labeled": {"k": 8},
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
        }
    return {
        "labeled": {"k": 16},
        "bootstrap": {"max_bootstrapped_demos": 4, "max_labeled_demos": 16},
        "random": {"num_candidates": 6, "max_bootstrapped_demos": 4, "max_labeled_demos": 16},
        "mipro": {"auto": "light", "minibatch_size": 10},
        "instructions": {"breadth": 4, "depth": 2},
    }


# -- lmforge ---------------------------------------------------------------------------


def run_lmforge(
    example: str, optimizers: list[str], quick: bool, cache_root: Path
) -> dict[str, Any]:
    """Baselines and every optimizer on ``example``; figures per row."""
    import lmforge as lf
    from lmforge.optimizers import create

    module_name, _, _, hand = EXAMPLES[example]
    mod = importlib.import_module(module_name)
    train, dev, test = mod.load("train"), mod.load("dev"), mod.load("test")
    out: dict[str, Any] = {"n": {"train": len(train), "dev": len(dev), "test": len(test)}}

    def fresh_lm(tag: str) -> Any:
        return lf.LM(MODEL, cache=cache_root / f"{example}-{tag}")

    def test_score(program: Any, lm: Any) -> dict[str, Any]:
        with lf.use(lm=lm, max_concurrency=1):
            result = lf.evaluate(program, test, mod.metric, concurrency=1, progress=False)
        return {"score": result.score, "failed": result.num_failures}

    started = time.perf_counter()
    out["zero-shot"] = {**test_score(mod.make_program(), fresh_lm("zero")), "calls": 0}
    out["zero-shot"]["seconds"] = time.perf_counter() - started
    print(f"  lmforge {example} zero-shot: {out['zero-shot']['score']:.2f}", flush=True)

    started = time.perf_counter()
    signature = mod.make_program().signature
    four_shot = lf.Predict(
        signature, adapter=lf.CompletionAdapter(), demos=[train[i] for i in hand]
    )
    out["hand 4-shot"] = {**test_score(four_shot, fresh_lm("hand")), "calls": 0}
    out["hand 4-shot"]["seconds"] = time.perf_counter() - started
    print(f"  lmforge {example} hand 4-shot: {out['hand 4-shot']['score']:.2f}", flush=True)

    for name in optimizers:
        lm = fresh_lm(name)
        started = time.perf_counter()
        with lf.use(lm=lm, max_concurrency=1):
            compiled = create(name, **settings(quick)[name]).compile(
                mod.make_program(),
                train,
                metric=mod.metric,
                valset=dev,
                lm=lm,
                seed=0,
                progress=False,
                concurrency=1,
            )
        seconds = time.perf_counter() - started
        info = compiled.compile_info  # type: ignore[attr-defined]
        meta = compiled.artifact_meta  # type: ignore[attr-defined]
        row = {
            **test_score(compiled, lm),
            "calls": info["backend_calls"],
            "cache_hits": info["cache_hits"],
            "seconds": seconds,
            "dev": meta["scores"]["dev"],
            "demos": sum(len(p.demos) for p in compiled.predictors()),
        }
        out[name] = row
        print(
            f"  lmforge {example} {name}: test {row['score']:.2f}, {row['calls']} calls, "
            f"{seconds:.0f} s",
            flush=True,
        )
    return out


def example_spec(example: str) -> dict[str, Any]:
    """What the DSPy child needs, as plain JSON: splits, fields, labels, instructions."""
    from typing import get_args

    module_name, input_field, label_field, _ = EXAMPLES[example]
    mod = importlib.import_module(module_name)
    signature = mod.make_program().signature
    label = next(f for f in signature.output_fields if f.name == label_field)
    return {
        "input": input_field,
        "output": label_field,
        "labels": list(get_args(label.annotation)),
        "instructions": signature.instructions,
        **{split: [dict(e) for e in mod.load(split)] for split in ("train", "dev", "test")},
    }


# -- DSPy (runs in DSPy's interpreter; stdlib and dspy only) ----------------------------


def child_dspy(spec_path: str, base: str, optimizers: list[str], quick: bool) -> dict[str, Any]:
    """DSPy's optimizers on one example against the llama.cpp server at ``base``."""
    from typing import Literal

    import dspy

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    inp, outp = spec["input"], spec["output"]
    labels = Literal[tuple(spec["labels"])]  # type: ignore[valid-type]
    signature = dspy.make_signature(
        {inp: (str, dspy.InputField()), outp: (labels, dspy.OutputField())},
        spec["instructions"],
    )
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM(
        "openai/gemma",
        api_base=base,
        api_key="none",
        model_type="text",
        cache=False,
        temperature=0.0,
        max_tokens=24,
        num_retries=1,
    )
    # DSPy has no completion-style adapter: its ChatAdapter flattened into a text prompt
    # drives a base model; the JSON fallback sends response_format, which text-completion
    # endpoints refuse. Parse failures are tolerated (max_errors) and score 0.
    dspy.configure(
        lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False), max_errors=100_000
    )

    def examples(split: str) -> list[Any]:
        return [dspy.Example(**row).with_inputs(inp) for row in spec[split]]

    train, dev, test = examples("train"), examples("dev"), examples("test")

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return bool(getattr(prediction, outp, None) == example[outp])

    def score(program: Any) -> dict[str, Any]:
        hits = failed = 0
        for example in test:
            try:
                hits += metric(example, program(**example.inputs()))
            except Exception:
                failed += 1
        return {"score": hits / len(test), "failed": failed}

    plan = settings(quick)
    out: dict[str, Any] = {"version": dspy.__version__}
    if not quick:
        started = time.perf_counter()
        out["zero-shot"] = {**score(dspy.Predict(signature)), "calls": 0}
        out["zero-shot"]["seconds"] = time.perf_counter() - started
    for name in optimizers:
        if name not in DSPY_PAIRS:
            continue
        calls0 = len(lm.history)
        prompt_lm: Any = None
        started = time.perf_counter()
        try:
            if name == "labeled":
                compiled = dspy.LabeledFewShot(k=plan["labeled"]["k"]).compile(
                    dspy.Predict(signature), trainset=train
                )
            elif name == "bootstrap":
                compiled = dspy.BootstrapFewShot(metric=metric, **plan["bootstrap"]).compile(
                    dspy.Predict(signature), trainset=train
                )
            else:
                m = plan["mipro"]
                # Proposals need room to write an instruction (the task LM stops at 24).
                prompt_lm = dspy.LM(
                    "openai/gemma",
                    api_base=base,
                    api_key="none",
                    model_type="text",
                    cache=False,
                    temperature=1.0,
                    max_tokens=256,
                    num_retries=1,
                )
                if "auto" in m:
                    optimizer = dspy.MIPROv2(
                        metric=metric, prompt_model=prompt_lm, auto=m["auto"], num_threads=1, seed=0
                    )
                    extra: dict[str, Any] = {}
                else:
                    optimizer = dspy.MIPROv2(
                        metric=metric,
                        prompt_model=prompt_lm,
                        auto=None,
                        num_candidates=m["num_instruction_candidates"],
                        max_bootstrapped_demos=m["max_bootstrapped_demos"],
                        max_labeled_demos=m["max_labeled_demos"],
                        num_threads=1,
                        seed=0,
                    )
                    extra = {"num_trials": m["num_trials"]}
                compiled = optimizer.compile(
                    dspy.Predict(signature),
                    trainset=train,
                    valset=dev,
                    minibatch_size=min(m["minibatch_size"], len(dev)),
                    **extra,
                )
        except Exception as exc:  # reported in the table, the other rows still run
            out[name] = {
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "calls": len(lm.history)
                - calls0
                + (len(prompt_lm.history) if prompt_lm is not None else 0),
                "seconds": time.perf_counter() - started,
            }
            continue
        seconds = time.perf_counter() - started
        calls = len(lm.history) - calls0
        if prompt_lm is not None:
            calls += len(prompt_lm.history)
        out[name] = {**score(compiled), "calls": calls, "seconds": seconds}
    return out


# -- driver ----------------------------------------------------------------------------


def run_dspy(
    python: str, example: str, base: str, optimizers: list[str], quick: bool, timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(example_spec(example)), encoding="utf-8")
        args = ["--child-dspy", str(spec), base, ",".join(optimizers)]
        try:
            proc = subprocess.run(
                [python, str(Path(__file__).resolve()), *args, *(["--quick"] if quick else [])],
                cwd=tmp,
                env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"DSPy run did not finish within {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "failed"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _cell(row: dict[str, Any] | None) -> tuple[str, str, str]:
    if not row:
        return ("-", "-", "-")
    if "error" in row and "score" not in row:
        return ("error", str(row.get("calls", "-")), f"{row.get('seconds', 0):.0f} s")
    failed = f" ({row['failed']} failed)" if row.get("failed") else ""
    return (f"{row['score']:.2f}{failed}", str(row["calls"]), f"{row['seconds']:.0f} s")


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    header = ("example", "method", "lmforge test", "calls", "wall", "DSPy test", "calls", "wall")
    rows: list[tuple[str, ...]] = []
    verdicts: list[str] = []
    for example, data in results["examples"].items():
        lmf, dsp = data["lmforge"], data.get("dspy") or {}
        for method in ("zero-shot", "hand 4-shot", *LMFORGE_OPTIMIZERS):
            if method not in lmf and method not in dsp:
                continue
            rows.append((example, method, *_cell(lmf.get(method)), *_cell(dsp.get(method))))
        hand = lmf["hand 4-shot"]["score"]
        for name in DSPY_PAIRS:
            ours, theirs = lmf.get(name), dsp.get(name)
            if not ours or not theirs or "score" not in theirs:
                continue
            ok_score = ours["score"] >= theirs["score"]
            ok_calls = ours["calls"] <= theirs["calls"] / 2
            ok_hand = ours["score"] > hand
            met = "MET" if ok_score and ok_calls and ok_hand else "not met"
            verdicts.append(
                f"{example} {name}: score {ours['score']:.2f} vs DSPy {theirs['score']:.2f} "
                f"({'>=' if ok_score else '<'}), calls {ours['calls']} vs {theirs['calls']} "
                f"({'<= half' if ok_calls else '> half'}), hand 4-shot {hand:.2f} "
                f"({'above' if ok_hand else 'not above'}): {met}"
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if verdicts:
        lines.append("")
        lines.append("goal (>= DSPy's test score, <= half its compile calls, > hand 4-shot):")
        lines += [f"  {v}" for v in verdicts]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", default=",".join(EXAMPLES), help="comma-separated")
    parser.add_argument(
        "--optimizers", default=",".join(LMFORGE_OPTIMIZERS), help="comma-separated"
    )
    parser.add_argument("--quick", action="store_true", help="small settings")
    parser.add_argument("--dspy-python", default=os.environ.get("DSPY_PYTHON"))
    parser.add_argument("--dspy-timeout", type=float, default=3600, help="seconds per example")
    parser.add_argument("--json", help="also write every figure to this file (after each step)")
    parser.add_argument("--child-dspy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    optimizers = [o for o in args.optimizers.split(",") if o]
    if args.child_dspy:
        spec, base, names = args.child_dspy
        print(json.dumps(child_dspy(spec, base, names.split(","), args.quick)))
        return 0
    examples = [e for e in args.examples.split(",") if e]
    for name in examples:
        if name not in EXAMPLES:
            parser.error(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    for name in optimizers:
        if name not in LMFORGE_OPTIMIZERS:
            parser.error(f"unknown optimizer {name!r}; choose from {', '.join(LMFORGE_OPTIMIZERS)}")
    dspy_python = args.dspy_python
    if dspy_python and not Path(dspy_python).exists():
        print(f"no DSPy interpreter at {dspy_python}; DSPy side skipped", file=sys.stderr)
        dspy_python = None

    results: dict[str, Any] = {
        "model": MODEL,
        "quick": args.quick,
        "settings": settings(args.quick),
        "cpus": os.cpu_count(),
        "load_before": round(os.getloadavg()[0], 2),
        "examples": {},
    }

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str), "utf-8")

    from lmforge.lm.local_models import models_dir

    # A fresh response cache, so every figure counts real calls; the assembled model file
    # stays where it is.
    os.environ["LMFORGE_MODELS_DIR"] = str(models_dir())
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-cache-") as cache_root:
        os.environ["LMFORGE_CACHE_DIR"] = cache_root
        for example in examples:
            print(f"$ lmforge on {example}", flush=True)
            results["examples"][example] = {
                "lmforge": run_lmforge(example, optimizers, args.quick, Path(cache_root))
            }
            save()
    if dspy_python:
        with llama_server() as base:
            for example in examples:
                print(f"$ DSPy on {example} (llama.cpp server)", flush=True)
                started = time.perf_counter()
                dspy = run_dspy(
                    dspy_python, example, base, optimizers, args.quick, args.dspy_timeout
                )
                print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
                results["examples"][example]["dspy"] = dspy
                save()
    else:
        print("DSPy side skipped (no --dspy-python / $DSPY_PYTHON)", file=sys.stderr)
    results["load_after"] = round(os.getloadavg()[0], 2)
    save()
    print()
    versions = [d.get("dspy", {}).get("version") for d in results["examples"].values()]
    dspy_version = next((v for v in versions if v), None)
    print(
        f"{MODEL}; {results['cpus']} CPUs, load average {results['load_before']} before / "
        f"{results['load_after']} after; DSPy {dspy_version or 'not run'}"
    )
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
