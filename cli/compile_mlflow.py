"""``lmforge compile --mlflow [URI]``: one MLflow run per compiled model.

The optimizer logs the parameters, the call estimate, each trial's score and the dev score
(``Optimizer.compile(mlflow_run=...)``); this module adds what only the command knows: the
test and baseline scores, the artifact file and its pyfunc model (registered as a new
version with ``--mlflow-register NAME``), and ``report.html``/``report.json``. Without a URI
the store is ``sqlite:///OUT/mlflow.db`` with run files in ``OUT/mlartifacts``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typer.core import TyperCommand

if TYPE_CHECKING:
    from lmforge.integrations.mlflow_tracking import MlflowRun

__all__ = ["IN_OUT", "CompileCommand", "CompileTracking", "optional_mlflow_uri"]

# What a bare ``--mlflow`` stands for: the SQLite store in --out.
IN_OUT = "@out"


def optional_mlflow_uri(args: list[str]) -> list[str]:
    """``args`` with a ``--mlflow`` that no URI follows (the last argument, or another
    option next) written as ``--mlflow=@out`` (as argparse's ``nargs="?"``)."""
    args = list(args)
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--mlflow" and (index + 1 == len(args) or args[index + 1].startswith("-")):
            args[index] = f"--mlflow={IN_OUT}"
    return args


class CompileCommand(TyperCommand):
    """The compile command, whose ``--mlflow`` value is optional (typer has no such option)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, optional_mlflow_uri(args))


@dataclasses.dataclass
class CompileTracking:
    """Where the command logs, and the runs it logged (for the report at the end)."""

    tracking_uri: str
    artifact_location: str | None
    experiment: str
    register: str | None
    run_ids: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_options(
        cls, uri: str | None, register: str | None, out: Path, experiment: str
    ) -> CompileTracking | None:
        """The tracking asked for by ``--mlflow``/``--mlflow-register`` (``None``: none);
        MLflow missing is a one-line error naming the extra, before any work."""
        if uri is None and register is None:
            return None
        from lmforge.integrations.mlflow import require_mlflow
        from lmforge.integrations.mlflow_tracking import (
            default_artifact_location,
            default_tracking_uri,
        )

        require_mlflow()
        if uri is None or uri == IN_OUT:
            location = default_artifact_location(out)
            return cls(default_tracking_uri(out), location, experiment, register)
        return cls(uri, None, experiment, register)

    def settings(self, run_name: str) -> MlflowRun:
        """The optimizer's settings: a new run; the model is logged here, after the test."""
        from lmforge.integrations.mlflow_tracking import MlflowRun

        return MlflowRun(
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            artifact_location=self.artifact_location,
            run_name=run_name,
            log_model=False,
        )

    def finish(
        self, run_id: str | None, scores: Mapping[str, Any], artifact: Path | None, failed: Any
    ) -> None:
        """Log the held-out scores and the artifact (as a file and as the model)."""
        if run_id is None:
            return
        logger = self._logger(run_id)
        logger.metrics({k: v for k, v in scores.items() if k != "dev"})
        if artifact is not None:
            logger.log_artifact(artifact)
            logger.log_model(artifact)
        if failed:
            logger.client.set_tag(run_id, "lmforge.failed", str(failed))
            logger.client.set_terminated(run_id, status="FAILED")
        self.run_ids.append(run_id)

    def report(self, *paths: Path | None) -> None:
        """Attach the report files to every run of the command."""
        for run_id in self.run_ids:
            logger = self._logger(run_id)
            for path in paths:
                if path is not None and path.is_file():
                    logger.log_artifact(path)

    def _logger(self, run_id: str) -> Any:
        from lmforge.integrations.mlflow_tracking import CompileLogger, MlflowRun

        return CompileLogger(
            MlflowRun(
                tracking_uri=self.tracking_uri,
                run_id=run_id,
                registered_model_name=self.register,
            )
        )
