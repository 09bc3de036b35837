"""``lmforge eval``: score a compiled program on a labeled JSONL file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import typer
from lmforge.optimizers.failures import FailureTally, lm_failures

from . import calibration
from . import options as check
from .app import app, fail, friendly
from .loading import TRUST_HELP, load_data, load_metric, program_inputs
from .loading import console as make_console
from .run import load_program

__all__ = ["eval_command"]


@app.command("eval")
@friendly
def eval_command(
    artifact: Path = typer.Argument(..., help="A compiled program (artifact JSON)."),
    data: Path = typer.Option(..., "--data", help="Labeled examples (JSONL)."),
    metric_spec: str = typer.Option(
        ..., "--metric", help="exact_match, f1, contains, or path/to/file.py:metric."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Override the model of every predictor."
    ),
    inputs: str | None = typer.Option(
        None, "--inputs", help="Comma-separated input keys (default: the program's)."
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Parallel LM calls."),
    failures: int = typer.Option(10, "--failures", help="How many failed examples to list."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result (with every row) as JSON."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar (on a terminal)."
    ),
    max_failure_rate: float = typer.Option(
        0.5,
        "--max-failure-rate",
        help="Exit 1 when more than this share of examples fail on LM calls (0 to 1).",
    ),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Directory to write report.json and report.html to (with precision and "
        "coverage per light and a reliability diagram when answers carry a confidence).",
    ),
) -> None:
    """Score ARTIFACT on --data with --metric and print the score table."""
    model = check.model_option(model)
    check.at_least(concurrency, "--concurrency", 1)
    check.at_least(failures, "--failures", 0)
    check.failure_rate(max_failure_rate)
    if report is not None:
        check.output_dir(report)
    program = load_program(artifact, model=model, trust=trust)
    metric = load_metric(metric_spec)
    names = [n.strip() for n in (inputs or "").split(",") if n.strip()] or program_inputs(program)
    examples = load_data(data, names, program, builtin_metric=":" not in metric_spec)
    result = lf.evaluate(
        program, examples, metric, concurrency=concurrency, progress=progress and not as_json
    )
    lights = calibration.evaluation_lights(program, result.rows)
    if as_json:
        typer.echo(json.dumps(_with_lights(result.to_dict(), lights), ensure_ascii=False))
    else:
        _print_table(artifact, data, result, failures)
        if lights is not None:
            calibration.print_lights(lights, make_console())
    if report is not None:
        _write_report(report, artifact, data, result, lights, quiet=as_json)
    failed = _lm_failures(result)
    if failed.share > max_failure_rate:
        fail(f"{failed.describe()}, more than --max-failure-rate {max_failure_rate:g}")


def _with_lights(document: dict[str, Any], lights: dict[str, Any] | None) -> dict[str, Any]:
    return {**document, "lights": lights} if lights is not None else document


def _write_report(
    directory: Path,
    artifact: Path,
    data: Path,
    result: lf.EvaluationResult,
    lights: dict[str, Any] | None,
    *,
    quiet: bool,
) -> None:
    """``report.json`` (the summary, the lights and every row) and ``report.html``."""
    from lmforge.artifact import write_json_atomic
    from lmforge.evaluation_result import row_record

    from .compile import write_html_report

    directory.mkdir(parents=True, exist_ok=True)
    run = {
        "model": artifact.name,
        "optimizer": "eval",
        "scores": {data.stem: result.score},
        "usage": dict(result.usage),
        "errors": {"count": result.num_failures},
        "lights": lights,
    }
    document = {
        "title": f"lmforge eval report: {artifact.name} on {data.name}",
        "kind": "eval",
        "lmforge_version": lf.__version__,
        **_with_lights(result.to_dict(rows=False), lights),
        "runs": [run],
        "rows": [row_record(row) for row in result.rows],
    }
    write_json_atomic(directory / "report.json", document)
    html = write_html_report(document, directory / "report.html")
    if not quiet:
        written = f" and {html}" if html is not None else ""
        typer.echo(f"report: {directory / 'report.json'}{written}")


def _lm_failures(result: lf.EvaluationResult) -> FailureTally:
    errors = (f"{row.error_type}: {row.error}" for row in result.failures)
    tally = FailureTally()
    tally.merge({"attempted": result.n, **lm_failures(errors)})
    return tally


def _print_table(artifact: Path, data: Path, result: lf.EvaluationResult, limit: int) -> None:
    from rich.table import Table

    usage = result.usage
    table = Table(title=f"{artifact.name} on {data.name}")
    for column in ("metric", "score", "examples", "failed", "LM calls", "cached", "tokens", "cost"):
        table.add_column(column)
    tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    cost = usage.get("cost_usd")
    table.add_row(
        result.metric,
        f"{result.percent:.1f}%",
        str(result.n),
        str(result.num_failures),
        str(usage.get("lm_calls", 0)),
        str(usage.get("cache_hits", 0)),
        str(tokens),
        f"${cost:.4f}" if cost is not None else "-",
    )
    console = make_console()
    console.print(table)
    for row in result.failures[:limit]:
        console.print(
            f"failed #{row.index}: {row.error_type}: {row.error}", markup=False, highlight=False
        )
    hidden = result.num_failures - limit
    if hidden > 0:
        console.print(
            f"... and {hidden} more failed example(s) (use --json for every row)", markup=False
        )
