"""``lmforge feedback export`` and ``lmforge recompile``: production feedback back into training.

    lmforge feedback export ./bundle --out data.jsonl
    lmforge recompile ./bundle --feedback ./bundle/data/requests.db \\
        --metric exact_match --model openai/gpt-4o-mini --out out/

``recompile`` exports the feedback, appends it to ``--train`` (if given), compiles the
bundle's program on it, and records the parent artifact's hash in each new artifact.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from lmforge.errors import UsageError

from .app import app, friendly
from .loading import TRUST_HELP

__all__ = ["export_feedback"]

feedback_app = typer.Typer(
    name="feedback",
    help="Feedback collected by a served program's request log.",
    no_args_is_help=True,
)
app.add_typer(feedback_app)


def _store(source: str) -> Any:
    """The request-log store of a bundle folder (its serving.json's request_log), or of a
    SQLite file / postgresql:// URL given directly."""
    from lmforge.targets.request_store import open_store, store_location
    from lmforge.targets.serving_file import bundle_request_log, read_serving

    path = Path(source)
    if path.is_dir():
        settings = bundle_request_log(read_serving(path), path)
        if settings is None:
            raise UsageError(
                f"{path} keeps no request log (serving.json has no request_log); pass the "
                "database itself: a SQLite file or a postgresql:// URL"
            )
        source = settings.url
    location = store_location(source)
    if "://" not in location and not Path(location).is_file():
        raise UsageError(
            f"{location}: no such request-log database (or bundle folder); a served bundle "
            "creates it on its first logged answer"
        )
    return open_store(location)


def export_feedback(source: str, out: Path, *, min_score: float = 1.0) -> dict[str, int]:
    """Write one JSONL training row (inputs and correct outputs) per answer with feedback.

    Corrected outputs are used as given; an answer scored at least ``min_score`` counts
    as confirmed and is written with the outputs the server gave. Returns the counts.
    """
    from lmforge._atomic import atomic_path

    if not 0.0 <= min_score <= 1.0:
        raise UsageError(f"--min-score must be between 0 and 1, got {min_score:g}")
    store = _store(source)
    counts = {"corrected": 0, "confirmed": 0, "skipped": 0}
    lines: list[str] = []
    try:
        for row in store.with_feedback():
            feedback = row["feedback"]
            if feedback["outputs"] is not None:
                outputs, kind = feedback["outputs"], "corrected"
            elif feedback["score"] is not None and feedback["score"] >= min_score:
                outputs, kind = row["outputs"], "confirmed"
            else:
                counts["skipped"] += 1
                continue
            counts[kind] += 1
            lines.append(json.dumps({**row["inputs"], **outputs}, ensure_ascii=False))
    finally:
        store.close()
    try:
        with atomic_path(out) as staging:
            staging.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return counts


def _summary(counts: dict[str, int], out: Path) -> str:
    rows = counts["corrected"] + counts["confirmed"]
    return (
        f"wrote {rows} rows to {out} ({counts['corrected']} corrected, {counts['confirmed']} "
        f"confirmed by score, {counts['skipped']} low-score answers without corrections skipped)"
    )


@feedback_app.command("export")
@friendly
def export_command(
    source: str = typer.Argument(
        ..., metavar="BUNDLE_OR_DB", help="A bundle folder, a SQLite file or a postgresql:// URL."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write."),
    min_score: float = typer.Option(
        1.0, help="A scored answer (no correction) at or above this counts as right."
    ),
) -> None:
    """Export answers with feedback as training rows (inputs plus the correct outputs)."""
    typer.echo(_summary(export_feedback(source, out, min_score=min_score), out))


@app.command("recompile")
@friendly
def recompile_command(
    bundle: Path = typer.Argument(..., help="The served bundle whose program is recompiled."),
    feedback: str = typer.Option(
        ..., "--feedback", help="The request-log database (SQLite file or postgresql:// URL)."
    ),
    metric_spec: str = typer.Option(
        ..., "--metric", help="exact_match, f1, contains, or path/to/file.py:metric."
    ),
    models: list[str] = typer.Option(..., "--model", "-m", help="Target model; repeatable."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    train: Path | None = typer.Option(
        None, "--train", help="Earlier training examples (JSONL); the feedback is appended."
    ),
    dev: Path | None = typer.Option(None, "--dev", help="Dev examples (JSONL)."),
    optimizer_name: str = typer.Option("bootstrap", "--optimizer", help="The optimizer."),
    options: list[str] = typer.Option([], "--option", "-o", help="Optimizer option name=value."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random choice."),
    min_score: float = typer.Option(1.0, help="As for `lmforge feedback export`."),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
) -> None:
    """Compile the bundle's program again on its feedback; new artifacts name their parent."""
    import lmforge as lf
    from lmforge.targets.bundle import SOURCE_DIR, verify_bundle

    from .compile import compile_command

    manifest = verify_bundle(bundle)
    out.mkdir(parents=True, exist_ok=True)
    rows = out / "feedback.jsonl"
    counts = export_feedback(feedback, rows, min_score=min_score)
    added = counts["corrected"] + counts["confirmed"]
    if not added:
        raise UsageError(f"{feedback} holds no usable feedback yet; nothing to recompile on")
    typer.echo(_summary(counts, rows))
    data = rows
    if train is not None:
        data = out / "train.jsonl"
        try:
            base = train.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--train {train}: cannot read it ({exc.strerror or exc})") from None
        data.write_text(base.rstrip("\n") + "\n" + rows.read_text(encoding="utf-8"), "utf-8")
    # The bundle's own program code (checked against its manifest) is trusted, as serving it.
    source = bundle / SOURCE_DIR
    shipped = []
    if source.is_dir():
        sys.path.insert(0, str(source))
        shipped = [
            ".".join(p.relative_to(source).with_suffix("").parts) for p in source.rglob("*.py")
        ]
    trusted = [*trust, *shipped]
    compile_command(
        program_spec=str(bundle / "program.json"),
        train=data,
        dev=dev,
        test=None,
        metric_spec=metric_spec,
        optimizer_name=optimizer_name,
        models=models,
        out=out,
        seed=seed,
        max_calls=None,
        max_cost=None,
        inputs=None,
        options=options,
        concurrency=None,
        storage=None,
        baseline=False,
        progress=False,
        max_failure_rate=0.5,
        trust=trusted,
        lights_target=0.9,
        mlflow=None,
        mlflow_register=None,
    )
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    parent = {"artifact_sha256": manifest.get("artifact_sha256"), "bundle": str(bundle)}
    for run in report["runs"]:
        if not run.get("artifact"):
            continue
        path = Path(run["artifact"])
        program = lf.load(path, trusted_modules=trusted)
        meta = dict(getattr(program, "artifact_meta", None) or {})
        meta["parent"] = parent
        meta["feedback"] = {**counts, "rows": added, "source": _redacted(feedback)}
        program.save(path, meta=meta)
        typer.echo(f"{path}: parent {parent['artifact_sha256']}, {added} feedback rows")


def _redacted(url: str) -> str:
    """A store URL without its password."""
    if "://" in url and "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rsplit('@', 1)[1]}"
    return url
