"""``lmforge migrate dspy``: turn a DSPy JSON save into an lmforge artifact."""

from __future__ import annotations

from pathlib import Path

import typer
from lmforge.errors import UsageError

from .app import app, friendly
from .loading import load_target, resolve_object

migrate_app = typer.Typer(
    help="Turn programs saved by other frameworks into lmforge artifacts.",
    no_args_is_help=True,
)
app.add_typer(migrate_app, name="migrate")


@migrate_app.command("dspy")
@friendly
def migrate_dspy(
    saved: Path = typer.Argument(..., help="The JSON file DSPy's program.save() wrote."),
    signature: str | None = typer.Option(
        None,
        "--signature",
        "-s",
        help="For a saved Predict or ChainOfThought: the lmforge signature, as "
        "module:Class, file.py:Class or a string like 'question -> answer'.",
    ),
    program: str | None = typer.Option(
        None,
        "--program",
        "-p",
        help="For a module with several predictors: the lmforge program (file.py:name), "
        "whose predictors carry DSPy's names.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the artifact (default: SAVED.lmforge.json)."
    ),
) -> None:
    """Read a program state saved by DSPy 3.x and write it as an lmforge artifact."""
    from lmforge.compat import dspy

    if (signature is None) == (program is None):
        raise UsageError("pass --signature (one predictor) or --program (a whole module)")
    if signature is not None:
        sig = signature if "->" in signature else resolve_object(signature, "signature")
        migrated = dspy.load(saved, signature=sig)
    else:
        target, _ = load_target(str(program))
        migrated = dspy.load(saved, program=target)
    target_path = out or saved.with_name(f"{saved.stem}.lmforge.json")
    migrated.save(target_path)
    count = len(migrated.predictors())
    demos = sum(len(p.demos) for p in migrated.predictors())
    typer.echo(f"wrote {target_path}: {count} predictor(s), {demos} demo(s)")
    typer.echo(f"check it: lmforge inspect {target_path}")


__all__ = ["migrate_app", "migrate_dspy"]
