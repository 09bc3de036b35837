"""``lmforge run`` and ``lmforge inspect``: call or show a compiled artifact."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lmforge as lf
import typer
from lmforge.errors import UsageError
from lmforge.lm.lm import LM

from . import options as check
from .app import app, friendly
from .loading import TRUST_HELP, load_artifact, load_lm

__all__ = ["load_program"]


def load_program(
    artifact: Path,
    *,
    model: str | None = None,
    allow_endpoints: bool = False,
    trust: list[str] | None = None,
) -> lf.Module:
    """Load an artifact (it may import the ``trust`` modules); ``model`` (a model name or
    ``path/to/lms.py:name``, as for every command's ``--model``) overrides every predictor's
    LM, and predictors saved without one use the default model ($LMFORGE_MODEL, else the
    embedded local model)."""
    model = check.model_option(model)
    program = load_artifact(artifact, allow_endpoints=allow_endpoints, trust=trust or [])
    if model is not None:
        program.set_lm(load_lm(model))
    elif any(p.lm is None for p in program.predictors()):
        default = LM()
        for predictor in program.predictors():
            predictor.lm = predictor.lm or default
    return program


def _parse_inputs(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where} is not valid JSON ({exc.msg}); pass an object like "
            """'{"question": "..."}'"""
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} must be a JSON object of inputs, got {type(data).__name__}")
    return data


def _output(prediction: lf.Prediction) -> str:
    from lmforge.adapters.coerce import _json_default

    return json.dumps(prediction.to_dict(), ensure_ascii=False, default=_json_default)


def _note_untrusted_endpoints(artifact: Path) -> None:
    """Say so on stderr when the artifact records endpoints that this run ignores.

    Without the note, a program compiled against ``hosted_vllm/...`` at a recorded
    ``api_base`` fails after its retries with a DNS or connection error that does not say
    why the recorded server was not called.
    """
    from lmforge.artifact import read_artifact

    states = read_artifact(artifact).get("predictors") or {}
    names = sorted(
        str(name)
        for name, state in states.items()
        if isinstance(state, dict)
        and isinstance(state.get("lm"), dict)
        and state["lm"].get("api_base")
    )
    if names:
        sys.stderr.write(
            f"note: {artifact} records an api_base for predictor(s) {', '.join(names)}; it is "
            "not used unless you pass --allow-endpoints (trust the file), so the model's "
            "default endpoint is called\n"
        )


@app.command()
@friendly
def run(
    artifact: Path = typer.Argument(..., help="A compiled program (artifact JSON)."),
    input: str | None = typer.Option(
        None, "--input", "-i", help="Inputs as a JSON object; omit to read JSONL from stdin."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Override the model of every predictor."
    ),
    allow_endpoints: bool = typer.Option(
        False, help="Trust api_base values stored in the artifact."
    ),
    concurrency: int = typer.Option(4, help="Parallel calls for JSONL input."),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
) -> None:
    """Run a compiled program on one input, or on JSONL lines from stdin (one result per line)."""
    model = check.model_option(model)
    check.at_least(concurrency, "--concurrency", 1)
    # Inputs are checked before the program (and its model) is loaded: a typo fails fast.
    single = _parse_inputs(input, "--input") if input is not None else None
    items = (
        []
        if single is not None
        else [
            _parse_inputs(line, f"stdin line {number}")
            for number, line in enumerate(sys.stdin, start=1)
            if line.strip()
        ]
    )
    program = load_program(artifact, model=model, allow_endpoints=allow_endpoints, trust=trust)
    if not allow_endpoints and not model:
        _note_untrusted_endpoints(artifact)
    if single is not None:
        typer.echo(_output(program(**single)))
        return
    failed = 0
    for result in program.batch(items, concurrency=concurrency):
        if isinstance(result, lf.BatchError):
            failed += 1
            typer.echo(
                json.dumps({"error": type(result.error).__name__, "message": str(result.error)})
            )
        else:
            typer.echo(_output(result))
    if failed:
        sys.stderr.write(f"{failed} of {len(items)} input(s) failed\n")
        raise typer.Exit(1)


@app.command()
@friendly
def inspect(
    artifact: Path = typer.Argument(..., help="A compiled program (artifact JSON)."),
    input: str | None = typer.Option(
        None, "--input", "-i", help="Render with these inputs (JSON) instead of placeholders."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Render for this model (as `lmforge run --model` calls it)."
    ),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
) -> None:
    """Print the prompts a compiled program sends (rendered without calling the model)."""
    inputs = _parse_inputs(input, "--input") if input else None
    model = check.model_option(model)
    # The same LM resolution as `lmforge run`: the prompt format depends on the model.
    program = load_program(artifact, model=model, trust=trust)
    lf.inspect(program, inputs=inputs)
