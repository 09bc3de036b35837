"""The ``main()`` shared by the examples: zero-shot score -> compile -> compiled score."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmforge as lf

__all__ = ["run_example"]


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m lmforge.examples.{name}",
        description="Score the program zero-shot on the test split, compile it with "
        "few-shot demos (BootstrapFewShot on the train split, scored on dev), score it "
        "again and save it.",
    )
    parser.add_argument(
        "--model", default=None, help="LM to use (default: $LMFORGE_MODEL or the local model)"
    )
    parser.add_argument(
        "--demos", type=int, default=16, help="most few-shot demos to compile in (default 16)"
    )
    parser.add_argument(
        "--bootstrapped",
        type=int,
        default=4,
        help="how many demos may come from the model's own right answers (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo choice (default 0)")
    parser.add_argument("--concurrency", type=int, default=2, help="parallel LM calls (default 2)")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"artifact path (default ./{name}.json)"
    )
    return parser


def run_example(
    name: str,
    make_program: Callable[[], lf.Module],
    metric: Callable[..., Any],
    load: Callable[[Any], list[lf.Example]],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run an example end to end from the command line; returns the figures it printed."""
    from lmforge.optimizers import BootstrapFewShot

    args = _parser(name).parse_args(argv)
    out = args.out or Path(f"{name}.json")
    lm = lf.LM(args.model)
    train, dev, test = load("train"), load("dev"), load("test")
    with lf.use(lm=lm):
        before = lf.evaluate(make_program(), test, metric, concurrency=args.concurrency)
        optimizer = BootstrapFewShot(
            max_bootstrapped_demos=args.bootstrapped, max_labeled_demos=args.demos
        )
        compiled = optimizer.compile(
            make_program(),
            train,
            metric=metric,
            valset=dev,
            seed=args.seed,
            concurrency=args.concurrency,
        )
        after = lf.evaluate(compiled, test, metric, concurrency=args.concurrency)
    compiled.save(out)
    demos = sum(len(p.demos) for p in compiled.predictors())
    print(
        f"{name} on {lm.model}: test score {before.percent:.0f}% zero-shot -> "
        f"{after.percent:.0f}% with {demos} demos; saved {out}"
    )
    return {"zero_shot": before.score, "compiled": after.score, "artifact": str(out)}
