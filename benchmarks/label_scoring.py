"""Label scoring vs generation on the quality benchmark's datasets (embedded model).

    .venv/bin/python benchmarks/label_scoring.py [--datasets headlines,reviews] [--json out.json]

For each dataset of ``quality_tasks.TASKS``, with the zero-shot prompt and the hand-written
4-shot prompt, on the test split: accuracy of constrained generation
(``decode="generate"``), of label scoring (``decode="score"``), of scoring with contextual
calibration (content-free inputs) and of scoring with a bias fitted on the dev split; and
the mean seconds per call of generation and of scoring. The LM response cache is off.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import lmforge as lf
from lmforge.calibration import calibrate_predictor
from lmforge.scoring import labelled_prediction, score_labels
from quality_tasks import TASKS, Task

MODEL = "local/gemma-3-270m"


def measure(task: Task, prompt: str, lm: lf.LM) -> dict[str, Any]:
    program = task.zero_shot() if prompt == "zero-shot" else task.hand_written()
    test = task.load("test")
    row: dict[str, Any] = {"dataset": task.name, "prompt": prompt, "n": len(test)}
    with lf.use(lm=lm):
        program.decode = "generate"
        correct, started = 0, time.perf_counter()
        for example in test:
            try:
                answer = program(**example.inputs())[task.label]
            except lf.errors.ParseError:
                answer = None
            correct += answer == example[task.label]
        row["generate"] = correct / len(test)
        row["generate_s_per_call"] = (time.perf_counter() - started) / len(test)

        started = time.perf_counter()
        scored = [score_labels(program, example.inputs()) for example in test]
        row["score_s_per_call"] = (time.perf_counter() - started) / len(test)
        contextual = calibrate_predictor(program, method="contextual")
        fitted = calibrate_predictor(program, task.load("dev"), method="fitted")
        for name, calibration in (
            ("score", None),
            ("score+contextual", contextual),
            ("score+fitted", fitted),
        ):
            hits = 0
            for example, (labels, scores) in zip(test, scored, strict=True):
                prediction, _ = labelled_prediction(labels, scores, calibration)
                hits += prediction[task.label] == example[task.label]
            row[name] = hits / len(test)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(TASKS))
    parser.add_argument("--prompts", default="zero-shot,hand")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    lm = lf.LM(MODEL, cache=False, temperature=0)
    rows = []
    print(f"loadavg {os.getloadavg()[0]:.2f}")
    header = (
        "dataset     prompt     generate  score  +contextual  +fitted  s/call gen  s/call score"
    )
    print(header)
    for name in args.datasets.split(","):
        for prompt in args.prompts.split(","):
            row = measure(TASKS[name], prompt, lm)
            rows.append(row)
            print(
                f"{row['dataset']:<11} {row['prompt']:<10} {row['generate']:>8.3f} "
                f"{row['score']:>6.3f} {row['score+contextual']:>12.3f} "
                f"{row['score+fitted']:>8.3f} {row['generate_s_per_call']:>11.3f} "
                f"{row['score_s_per_call']:>13.3f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
