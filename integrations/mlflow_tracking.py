"""Compile runs logged to MLflow (``compile(..., mlflow_run=...)``, ``lmforge compile --mlflow``).

One MLflow run per compiled model holds: the parameters (optimizer and its settings, seed,
model, metric, dataset sizes and hashes), the call estimate, each search trial's score as a
step metric (``trial_score``, logged as the trial finishes), the final scores and usage, and
the compiled program as a pyfunc model (optionally registered as a new model version). The
CLI adds the test score, ``report.html`` and the artifact file. Parameters are filtered of
anything named like a credential, and no key is ever logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CompileLogger",
    "MlflowRun",
    "default_artifact_location",
    "default_tracking_uri",
    "start_compile_run",
]

DEFAULT_EXPERIMENT = "lmforge"
_PARAM_LIMIT = 6000  # MLflow's longest parameter value


@dataclasses.dataclass(frozen=True)
class MlflowRun:
    """Where and how to log a compile run (``Optimizer.compile(..., mlflow_run=MlflowRun())``).

    ``tracking_uri``: ``None`` uses MLflow's own setting (``$MLFLOW_TRACKING_URI``, or
    ``mlflow.set_tracking_uri``); with neither that nor ``run_id`` given, an active MLflow run
    (``with mlflow.start_run():``) is logged into. ``experiment``: created when missing.
    ``artifact_location``: where a new experiment keeps its files (default: MLflow's).
    ``run_id``: log into this existing run. ``registered_model_name``: also register the
    compiled program as a new version of that model. ``log_model``: log the program as a
    pyfunc model when the compile ends.
    """

    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    artifact_location: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    registered_model_name: str | None = None
    log_model: bool = True


def default_tracking_uri(out: str | Path) -> str:
    """The CLI's default store: a SQLite database in the output folder."""
    return f"sqlite:///{(Path(out) / 'mlflow.db').resolve()}"


def default_artifact_location(out: str | Path) -> str:
    """Where the CLI's default store keeps run files: ``mlartifacts/`` in the output folder."""
    return (Path(out) / "mlartifacts").resolve().as_uri()


class CompileLogger:
    """Logs one compile run; built by ``Optimizer.compile`` only when MLflow is asked for."""

    def __init__(self, settings: MlflowRun | bool) -> None:
        from .mlflow import require_mlflow

        self.mlflow = require_mlflow()
        self.settings = settings if isinstance(settings, MlflowRun) else MlflowRun()
        self.run_id: str | None = self.settings.run_id
        self._owned = False  # whether this logger started the run (and so ends it)
        self.client = self.mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    @property
    def tracking_uri(self) -> str:
        return str(self.settings.tracking_uri or self.mlflow.get_tracking_uri())

    def start(self, params: Mapping[str, Any], estimate: int) -> str:
        """Open (or attach to) the run and log the parameters and the call estimate."""
        settings = self.settings
        active = self.mlflow.active_run()
        if self.run_id is None and settings.tracking_uri is None and active is not None:
            self.run_id = active.info.run_id
        elif self.run_id is None:
            experiment = self.client.get_experiment_by_name(settings.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(
                    settings.experiment, artifact_location=settings.artifact_location
                )
            )
            run = self.client.create_run(experiment_id, run_name=settings.run_name)
            self.run_id, self._owned = run.info.run_id, True
        assert self.run_id is not None
        self.client.log_batch(self.run_id, params=_params(params))
        self.client.log_metric(self.run_id, "estimated_lm_calls", float(estimate))
        return self.run_id

    def trial(self, record: Mapping[str, Any]) -> None:
        """One finished search trial: its score as step ``number`` of ``trial_score``."""
        score = record.get("score")
        if self.run_id is not None and isinstance(score, int | float):
            self.client.log_metric(
                self.run_id, "trial_score", float(score), step=int(record.get("number") or 0)
            )

    def finish(self, program: Any, meta: Mapping[str, Any]) -> None:
        """Log the final scores, usage and candidates, then the model; end an owned run."""
        assert self.run_id is not None
        self.metrics(meta.get("scores") or {}, prefix="")
        usage = meta.get("usage") or {}
        self.metrics(
            {k: usage.get(k) for k in ("lm_calls", "prompt_tokens", "completion_tokens")}
            | {"cost_usd": usage.get("cost_usd")},
            prefix="compile_",
        )
        for step, candidate in enumerate(meta.get("candidates") or []):
            if isinstance(candidate.get("score"), int | float):
                self.client.log_metric(
                    self.run_id, "candidate_score", float(candidate["score"]), step=step
                )
        if meta.get("stopped"):
            self.client.set_tag(self.run_id, "lmforge.stopped", str(meta["stopped"]))
        if self.settings.log_model:
            self.log_model(program)
        self.end()

    def metrics(self, values: Mapping[str, Any], *, prefix: str = "") -> None:
        """Log the numeric ``values`` (``dev`` becomes ``dev_score`` with ``prefix=""``)."""
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = f"{prefix}{key}" if prefix else f"{key}_score"
            if not prefix and (key.endswith(("_failures", "_split")) or key == "score"):
                name = key
            self.client.log_metric(self.run_id, name, float(value))

    def log_model(self, program: Any) -> Any:
        """Log ``program`` (or an artifact path) as the run's pyfunc model ``program``."""
        from .mlflow import log_model

        with self._fluent():
            return log_model(
                program, "program", registered_model_name=self.settings.registered_model_name
            )

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (``report.html``, the artifact JSON) to the run."""
        if self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path))

    @contextlib.contextmanager
    def failing(self) -> Iterator[None]:
        """Marks the run FAILED when the block raises (a budget stop is not an error)."""
        try:
            yield
        except BaseException:
            self.end("FAILED")
            raise

    def end(self, status: str = "FINISHED") -> None:
        if self._owned and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[None]:
        """MLflow's fluent API (``log_model`` needs it) pointed at this run, then put back as
        it was: the caller's tracking URI, its environment variable and active run."""
        import os

        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        mlflow = self.mlflow
        active = mlflow.active_run()
        saved = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            # (mlflow's own switch; restoring it unsets the variable, so it is put back)
            with _use_tracking_uri(self.tracking_uri):
                if active is not None and active.info.run_id == self.run_id:
                    yield
                else:
                    with mlflow.start_run(run_id=self.run_id, nested=active is not None):
                        yield
        finally:
            if saved is not None:
                os.environ["MLFLOW_TRACKING_URI"] = saved


def start_compile_run(
    settings: MlflowRun | bool,
    identity: Mapping[str, Any],
    train_n: int,
    valset: Sequence[Any] | None,
    estimate: int,
) -> CompileLogger:
    """A started logger for ``Optimizer.compile`` (its run identity as the parameters)."""
    from lmforge import __version__

    logger = CompileLogger(settings)
    # "model" is renamed: MLflow logs the model's load-time config (a "model" key) as params
    params = {
        **{k: v for k, v in identity.items() if k not in ("program", "metric_code", "model")},
        "target_model": identity.get("model"),
        "train_n": train_n,
        "dev_n": len(valset) if valset is not None else None,
        "lmforge_version": __version__,
    }
    logger.start(params, estimate)
    return logger


def _params(params: Mapping[str, Any]) -> list[Any]:
    from lmforge.lm.lm import is_secret_key
    from mlflow.entities import Param

    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not is_secret_key(str(key)):
                    walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif value is not None:
            flat[prefix] = value

    walk("", params)
    out = []
    for key, value in sorted(flat.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out.append(Param(key, text[:_PARAM_LIMIT]))
    return out
