"""Read a program state saved by DSPy 3.x (``program.save("x.json")``) into an lmforge
program: per predictor its instructions, custom field prefixes and descriptions, demos and
LM settings.

DSPy's JSON names no fields and holds no types, so the lmforge side of the program comes
from the user: either the program itself (``program=``, whose predictor names match DSPy's,
e.g. ``classify.predict``), or a signature (``signature=``) for a program that was one
``dspy.Predict`` or ``dspy.ChainOfThought``. Pickled DSPy programs are never read.

    program = lmforge.compat.dspy.load("router.json", signature=Route)
    program.save("router@gpt-4o-mini.json")
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.errors import ArtifactError, UsageError
from lmforge.signature import Signature, as_signature

__all__ = ["load", "read_state"]

# DSPy keeps these beside each predictor's state; they carry nothing a prompt uses.
_STATE_KEYS = frozenset({"traces", "train", "demos", "signature", "lm"})
# Request settings carried over from a saved ``dspy.LM``; everything else it records
# (retries, cache, fine-tuning settings, its class) is DSPy's own machinery.
_LM_SETTINGS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)
_DEMO_MARKERS = frozenset({"augmented", "dspy_uuid", "dspy_split"})


def read_state(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The predictor states of a DSPy JSON save, by predictor name, and its metadata.

    A saved bare ``dspy.Predict`` (whose state is not keyed by name) is returned under
    ``"self"``, the name lmforge gives a lone predictor.
    """
    file = Path(path)
    if file.is_dir() or file.suffix == ".pkl":
        raise UsageError(
            f"{file} is a pickled DSPy program, which lmforge never loads; save the program "
            "with program.save('program.json') in DSPy and migrate that file"
        )
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such file: {file}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{file} is not a readable DSPy JSON save ({exc})") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{file} is not a DSPy program save: expected a JSON object")
    found = document.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    if isinstance(document.get("signature"), dict):  # a bare dspy.Predict
        states = {"self": document}
    else:
        states = {k: v for k, v in document.items() if k != "metadata"}
    for name, state in states.items():
        if not isinstance(state, dict) or not isinstance(state.get("signature"), dict):
            raise ArtifactError(
                f"{file}: {name!r} is not a DSPy predictor state (no 'signature' object)"
            )
        if not isinstance(state["signature"].get("fields"), list):
            raise ArtifactError(f"{file}: predictor {name!r} has no 'fields' list")
        if not isinstance(state.get("demos", []), list):
            raise ArtifactError(f"{file}: predictor {name!r} has 'demos' that is not a list")
    if not states:
        raise ArtifactError(f"{file} holds no predictor state")
    return states, metadata


def load(
    path: str | os.PathLike[str],
    *,
    program: lf.Module | None = None,
    signature: str | Signature | type[Signature] | None = None,
) -> lf.Module:
    """An lmforge program carrying the state DSPy saved at ``path``.

    Give ``program`` (an lmforge program with the same predictor names) or ``signature``
    (for a saved ``dspy.Predict``, or a ``dspy.ChainOfThought`` saved on its own). The
    program is returned with ``artifact_meta`` recording where it came from, ready for
    ``program.save(...)``.
    """
    if (program is None) == (signature is None):
        raise UsageError("pass exactly one of program= (an lf.Module) or signature=")
    states, metadata = read_state(path)
    if program is None:
        program = _program_for(states, as_signature(signature))  # type: ignore[arg-type]
    elif not isinstance(program, lf.Module):
        raise UsageError(f"program= must be an lf.Module, got {type(program).__name__}")
    else:
        program = program.deepcopy()
    predictors = dict(program.named_predictors())
    if len(states) == 1 and len(predictors) == 1:  # one each: a pair, whatever their names
        states = {next(iter(predictors)): next(iter(states.values()))}
    missing = sorted(set(states) - set(predictors))
    unmatched = sorted(set(predictors) - set(states))
    if missing or unmatched:
        raise UsageError(
            f"the DSPy save has predictor(s) {sorted(states)}, the lmforge program has "
            f"{sorted(predictors)}; give a program whose predictors carry the same names"
        )
    for name, state in states.items():
        _apply(predictors[name], name, state)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    versions = metadata.get("dependency_versions")
    program.artifact_meta = {  # type: ignore[attr-defined]
        "migrated_from": {
            "framework": "dspy",
            "version": versions.get("dspy") if isinstance(versions, dict) else None,
            "source_sha256": digest,
        }
    }
    return program


def _program_for(states: Mapping[str, dict[str, Any]], signature: Signature) -> lf.Module:
    """A ``Predict`` or ``ChainOfThought`` over ``signature``, as the save's shape says."""
    if set(states) == {"self"}:
        fields = states["self"]["signature"]["fields"]
        if len(fields) == len(signature.fields):
            return lf.Predict(signature)
        if len(fields) == len(signature.fields) + 1:
            from lmforge.modules import ChainOfThought

            return ChainOfThought(signature)
        raise UsageError(
            f"the DSPy predictor has {len(fields)} fields, the signature "
            f"{signature.signature!r} has {len(signature.fields)}; give the matching signature"
        )
    if set(states) == {"predict"}:
        from lmforge.modules import ChainOfThought

        return ChainOfThought(signature)
    raise UsageError(
        f"the DSPy save holds several predictors ({', '.join(sorted(states))}); pass the "
        "lmforge program (program= / --program) instead of a signature"
    )


def _apply(predictor: lf.Predict, name: str, state: Mapping[str, Any]) -> None:
    saved = state["signature"]
    fields = saved["fields"]
    signature = predictor.signature
    if len(fields) != len(signature.fields):
        raise UsageError(
            f"predictor {name!r}: DSPy saved {len(fields)} fields, the lmforge signature "
            f"{signature.signature!r} has {len(signature.fields)}"
        )
    for field, dspy_field in zip(signature.fields, fields, strict=True):
        changes = _field_changes(field, dspy_field)
        if changes:
            signature = signature.with_field(field.name, **changes)
    instructions = saved.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        signature = signature.with_instructions(instructions)
    names = set(signature.field_names())
    demos = []
    for demo in state.get("demos") or []:
        if not isinstance(demo, dict):
            raise ArtifactError(f"predictor {name!r}: a demo is not a JSON object: {demo!r}")
        demos.append({k: v for k, v in demo.items() if k in names and k not in _DEMO_MARKERS})
    predictor.signature = signature
    predictor.demos = demos
    lm = state.get("lm")
    if isinstance(lm, dict) and isinstance(lm.get("model"), str):
        settings = {k: lm[k] for k in _LM_SETTINGS if lm.get(k) is not None}
        model_type = lm.get("model_type") if lm.get("model_type") in ("chat", "text") else None
        predictor.lm = lf.LM(lm["model"], model_type=model_type, **settings)


def _field_changes(field: Any, dspy_field: Any) -> dict[str, str]:
    """The description and prefix DSPy holds for ``field`` where they differ from DSPy's
    defaults (``${name}`` and the name in title case), i.e. what a user or an optimizer
    wrote."""
    if not isinstance(dspy_field, Mapping):
        raise ArtifactError(f"field {field.name!r}: DSPy field state is not an object")
    changes: dict[str, str] = {}
    description = dspy_field.get("description")
    is_default = description == f"${{{field.name}}}"
    if isinstance(description, str) and not is_default and description != field.description:
        changes["description"] = description
    prefix = dspy_field.get("prefix")
    if isinstance(prefix, str):
        label = prefix.strip().removesuffix(":").strip()
        default = " ".join(part.capitalize() for part in field.name.split("_") if part)
        if label and label != default and label != field.label:
            changes["prefix"] = label
    return changes
