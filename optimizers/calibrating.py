"""Label-score calibration inside a compile: candidates are scored as they will be served.

A predictor that answers a closed output by label scoring (:mod:`lmforge.scoring`)
favours some labels whatever the input, and by how much depends on its demos and
instructions: an uncalibrated few-shot prompt can answer one label for almost every
input. So an optimizer's ``calibration`` setting decides what the search scores and what
the compiled program carries (:mod:`lmforge.calibration`):

* ``"auto"`` (default): every candidate is scored with contextual calibration measured
  for its own prompt (3 content-free scoring calls per predictor). The chosen program is
  calibrated again at the end (a bias fitted on the dev split when there is one and it
  does at least as well there), and the calibration is kept only when the program scores
  at least as well with it as without it (on dev, else on train); the report says which.
* ``"contextual"`` / ``"fitted"``: that calibration, kept without the final comparison
  (``"fitted"`` needs a dev split).
* ``"off"``: nothing is calibrated.

Programs with no closed output, or whose model cannot score, are never touched.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import lmforge as lf
from lmforge.calibration import calibrate, can_calibrate
from lmforge.errors import UsageError
from lmforge.modules.demo_sets import closed_output

from .store import program_fingerprint

if TYPE_CHECKING:
    from .run import Run

__all__ = [
    "CALIBRATIONS",
    "acalibrated",
    "calibrated_teacher",
    "calibration_calls",
    "check_calibration",
    "finish_calibration",
    "may_score",
]

CALIBRATIONS = ("auto", "contextual", "fitted", "off")


def check_calibration(value: Any, owner: str) -> str:
    """``value`` if it names a calibration mode, else a ``UsageError`` naming them."""
    if value not in CALIBRATIONS:
        raise UsageError(
            f"{owner}(calibration=...) must be one of {', '.join(CALIBRATIONS)}, not {value!r}"
        )
    return str(value)


def may_score(program: lf.Module) -> bool:
    """Whether some predictor of ``program`` has a closed output (and so may be scored)."""
    return any(
        predictor.decode != "generate" and closed_output(predictor.signature) is not None
        for predictor in program.predictors()
    )


def calibration_calls(
    program: lf.Module, rows: int, has_dev: bool, method: str, calls_per_run: int
) -> tuple[int, int]:
    """An upper bound of the LM calls calibration adds to a compile of ``program`` (the
    configured LM in scope): per candidate (3 content-free calls per predictor that scores)
    and in total at the end (fitting on dev, then the program on ``rows`` held-out rows
    with and without calibration). ``(0, 0)`` when nothing will be calibrated."""
    if method == "off" or not may_score(program):
        return 0, 0
    scoring = sum(1 for predictor in program.predictors() if can_calibrate(predictor))
    if not scoring:
        return 0, 0
    passes = {"auto": 2, "contextual": 1, "fitted": 1}[method] + (1 if has_dev else 0)
    return 3 * scoring, 3 * scoring + passes * rows * calls_per_run


def _calibrated_copy(program: lf.Module, dev: list[lf.Example] | None, method: str) -> lf.Module:
    copy = program.deepcopy()
    calibrate(copy, dev, method=method)  # type: ignore[arg-type]
    if all(predictor.calibration is None for predictor in copy.predictors()):
        return program  # nothing scores: keep the original (and its fingerprint)
    return copy


async def acalibrated(run: Run, program: lf.Module) -> lf.Module:
    """``program`` as the search scores it: a copy with contextual calibration of each
    scoring predictor, or ``program`` itself when calibration is off or nothing scores.
    Measured once per program state in a run (a search scores one candidate on several
    minibatches)."""
    if run.calibration == "off" or not may_score(program):
        return program
    key = program_fingerprint(program)
    known = run.calibrated.get(key)
    if known is None:
        # Calibration scores through the blocking LM API: off the event loop, in this context.
        known = await asyncio.to_thread(_calibrated_copy, program, None, "contextual")
        run.calibrated[key] = known
    return known


def calibrated_teacher(teacher: lf.Module, method: str) -> lf.Module:
    """A default bootstrap teacher with contextual calibration (when calibration is on and
    it scores labels), so that its traces are not all of the label its prompt favours."""
    if method == "off" or not may_score(teacher):
        return teacher
    return _calibrated_copy(teacher, None, "contextual")


def finish_calibration(
    run: Run, program: lf.Module, dev: float | None, method: str
) -> tuple[lf.Module, float | None, dict[str, Any] | None]:
    """The compiled program with its final calibration, its dev score and what was done
    (``None`` when calibration is off or nothing scores)."""
    if method == "off" or not may_score(program):
        return program, dev, None
    val = run.valset
    if method == "fitted" and not val:
        raise UsageError("calibration='fitted' needs a dev split (valset=... or --dev)")
    fit = method in ("auto", "fitted") and bool(val)
    if fit:
        calibrated = _calibrated_copy(program, val, method)
    else:  # contextual: the search may have measured it for this program already
        known = run.calibrated.get(program_fingerprint(program))
        calibrated = known if known is not None else _calibrated_copy(program, None, "contextual")
    if calibrated is program:
        return program, dev, None
    kinds = sorted({p.calibration.method for p in calibrated.predictors() if p.calibration})
    info: dict[str, Any] = {"mode": method, "method": "+".join(kinds), "kept": True}
    if method != "auto":
        if val:
            dev = run.evaluate(calibrated, val, label="dev (calibrated)", calibrate=False).score
        return calibrated, dev, info
    data, split = (val, "dev") if val else (run.trainset, "train")
    with_it = run.evaluate(calibrated, data, label=f"{split} (calibrated)", calibrate=False)
    without = run.evaluate(program, data, label=f"{split} (uncalibrated)", calibrate=False)
    info.update(split=split, calibrated=with_it.score, uncalibrated=without.score)
    kept = with_it.score >= without.score
    info["kept"] = kept
    run.note(
        f"label calibration ({info['method']}): {'kept' if kept else 'dropped'} "
        f"({split} {100 * with_it.score:.1f}% calibrated, {100 * without.score:.1f}% without)"
    )
    chosen, score = (calibrated, with_it.score) if kept else (program, without.score)
    return chosen, score if val else dev, info
