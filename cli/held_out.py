"""Scoring after a compile (the compiled program on the test split, the uncompiled one as
the baseline), checkpointed in the run directory: a compile resumed after a kill during or
after these evaluations does not pay for them again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.lights import confidence_pairs
from lmforge.optimizers.failures import lm_failures
from lmforge.optimizers.store import RunStore, program_fingerprint

__all__ = ["HeldOut"]


class HeldOut:
    """Checkpointed evaluations of one compile run (``run_dir`` names the run, so results
    are never shared between runs of other programs, data, settings or models)."""

    def __init__(self, run_dir: Path) -> None:
        self._store = RunStore(run_dir / "held_out", {"run": run_dir.name})

    def score(
        self,
        program: lf.Module,
        data: Sequence[lf.Example],
        metric: Callable[..., Any],
        *,
        label: str,
        concurrency: int | None,
        progress: bool,
    ) -> dict[str, Any]:
        """``{"score", "n", "failures", "lm_failures": {"failed", "errors"}, "lm_calls",
        "pairs"}`` of ``program`` on ``data`` (``pairs``: ``[confidence, score]`` per
        example, ``None`` when no answer had one); stored under the program's state, the
        data and the metric."""
        from lmforge.data import dataset_hash
        from lmforge.metrics import metric_name

        key = f"{label}/{program_fingerprint(program)}/{dataset_hash(data)}/{metric_name(metric)}"
        record = self._store.get(key)
        if record is not None:
            return record["value"]  # type: ignore[no-any-return]
        result = lf.evaluate(
            program,
            data,
            metric,
            concurrency=concurrency,
            progress=progress,
            description=label,
        )
        pairs = confidence_pairs(result.rows)
        value = {
            "score": result.score,
            "n": result.n,
            "failures": result.num_failures,
            "lm_failures": lm_failures(f"{r.error_type}: {r.error}" for r in result.failures),
            "lm_calls": result.usage.get("lm_calls"),
            # (confidence, score) per example, for the lights: only when any answer had one
            "pairs": pairs if any(c is not None for c, _ in pairs) else None,
        }
        return self._store.put(key, value, result.usage)["value"]  # type: ignore[no-any-return]
