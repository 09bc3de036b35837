"""Fine-tuning data and the :class:`Finetuner` protocol.

Optimizers that train weights (``lmforge.optimizers.Finetune``) turn traced predictor
calls into :class:`TrainingExample` items: the exact prompt the *student* is sent when it
is deployed (same adapter, same instructions, with or without its demos, converted to the
student model's chat or text mode exactly as :meth:`lmforge.LM.request` converts it), and
the target text that the student's adapter parses back into the traced outputs.

:class:`TrainingData` deduplicates the examples, hashes their content (independent of
order), splits them into train and validation with a seed, and writes both the chat form
(``{"messages": [...]}``, what managed fine-tuning APIs take) and the completion form
(``{"prompt": ..., "completion": ...}``, what base-model trainers take) as JSONL.

A :class:`Finetuner` trains a model on that data and returns a :class:`TunedModel`: an
``lf.LM`` that serves the tuned weights, plus what the artifact should record about them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._atomic import write_json_atomic, write_text_atomic
from .adapters import Adapter, ChatAdapter, CompletionAdapter, JSONAdapter
from .adapters.coerce import render_value
from .errors import ParseError, UsageError

if TYPE_CHECKING:
    from .lm.lm import LM
    from .predict import Predict
    from .signature import Signature

__all__ = [
    "Finetuner",
    "TrainingData",
    "TrainingExample",
    "TunedModel",
    "render_example",
    "target_text",
]

DATA_FORMAT = "lmforge.finetune-data"
_FILES = (
    "train.chat.jsonl",
    "train.completion.jsonl",
    "validation.chat.jsonl",
    "validation.completion.jsonl",
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _jsonl_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


@dataclasses.dataclass(frozen=True, slots=True)
class TrainingExample:
    """One training example: a predictor's deployed prompt and its target answer.

    ``messages`` is the prompt in chat form (without the answer), ``prompt`` the same
    prompt in text form, ``completion`` the answer text. ``predictor`` names the predictor
    the example teaches (it is not written into the JSONL lines).
    """

    predictor: str
    messages: tuple[dict[str, Any], ...]
    prompt: str
    completion: str

    def chat_record(self) -> dict[str, Any]:
        """``{"messages": [..., {"role": "assistant", "content": completion}]}``."""
        messages = [dict(m) for m in self.messages]
        return {"messages": [*messages, {"role": "assistant", "content": self.completion}]}

    def completion_record(self) -> dict[str, Any]:
        """``{"prompt": ..., "completion": ...}``."""
        return {"prompt": self.prompt, "completion": self.completion}

    @property
    def key(self) -> str:
        """A content hash: equal for examples that teach the same thing."""
        blob = _canonical([self.chat_record(), self.completion_record()])
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "predictor": self.predictor,
            "messages": [dict(m) for m in self.messages],
            "prompt": self.prompt,
            "completion": self.completion,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingExample:
        return cls(
            predictor=str(data["predictor"]),
            messages=tuple(dict(m) for m in data["messages"]),
            prompt=str(data["prompt"]),
            completion=str(data["completion"]),
        )


# -- rendering ---------------------------------------------------------------------------


def target_text(adapter: Adapter, signature: Signature, outputs: Mapping[str, Any]) -> str:
    """The answer text ``adapter`` would parse back into ``outputs`` (what a demo's answer
    looks like in that adapter's prompts).

    Adapters other than the built-in three provide ``format_outputs(signature, outputs)``.
    """
    fields = signature.output_fields
    missing = [f.name for f in fields if f.name not in outputs]
    if missing:
        raise UsageError(f"the outputs lack {missing}; a training target needs every output field")
    custom = getattr(adapter, "format_outputs", None)
    if callable(custom):
        return str(custom(signature, outputs))
    if isinstance(adapter, CompletionAdapter):
        parts = []
        for i, field in enumerate(fields):
            value = " ".join(render_value(outputs[field.name]).split("\n"))
            parts.append(f" {value}" if i == 0 else f"\n{field.label}: {value}")
        return "".join(parts)
    if isinstance(adapter, ChatAdapter):
        return adapter.render(
            "assistant", fields=[(f.name, render_value(outputs[f.name])) for f in fields]
        )
    if isinstance(adapter, JSONAdapter):
        return render_value({f.name: outputs[f.name] for f in fields})
    raise UsageError(
        f"{type(adapter).__name__} cannot render training targets; give it a "
        "format_outputs(signature, outputs) -> str method"
    )


def render_example(
    name: str,
    predictor: Predict,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    *,
    lm: LM,
    include_demos: bool = False,
) -> TrainingExample:
    """The training example for one call of ``predictor`` as the student will be called.

    The prompt is what ``predictor`` sends to ``lm`` (its adapter, or the one ``lm``'s
    profile picks; its demos when ``include_demos``), in ``lm``'s chat or text mode.
    Raises :class:`lmforge.ParseError` when the target would not parse back into
    ``outputs`` (the example would teach something the program cannot read).
    """
    signature = predictor.signature
    adapter = predictor.resolve_adapter(lm)
    demos = predictor.demos if include_demos else ()
    values = {f.name: inputs[f.name] for f in signature.input_fields}
    prompt = adapter.format(signature, demos, values)
    answer = target_text(adapter, signature, outputs)
    parsed = adapter.parse(signature, answer)
    expected = {f.name: outputs[f.name] for f in signature.output_fields}
    if _canonical(_plain(parsed)) != _canonical(_plain(expected)):
        raise ParseError(f"the target for {name} does not parse back into its outputs", raw=answer)
    messages = (
        prompt.messages
        if prompt.messages is not None
        else ({"role": "user", "content": prompt.text or ""},)
    )
    text = prompt.text if prompt.text is not None else _as_text(prompt.messages or ())
    request = lm.request(messages=prompt.messages, prompt=prompt.text)
    if request.prompt is not None:
        text = request.prompt
    if request.messages is not None:
        messages = request.messages
    return TrainingExample(name, tuple(dict(m) for m in messages), text, answer)


def _as_text(messages: Sequence[Mapping[str, Any]]) -> str:
    # The same join lf.LM.request uses to send chat prompts to text models.
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default, ensure_ascii=False))


def _default(value: Any) -> Any:
    from .adapters.coerce import _json_default

    return _json_default(value)


# -- the data set ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TrainingData:
    """Deduplicated training examples split into train and validation.

    Build it with :meth:`build`. ``content_hash`` depends only on the set of examples
    (not their order, not the split); the split depends on the content and ``seed``.
    """

    train: tuple[TrainingExample, ...]
    validation: tuple[TrainingExample, ...]
    content_hash: str
    seed: int
    validation_fraction: float
    duplicates: int = 0

    @classmethod
    def build(
        cls,
        examples: Iterable[TrainingExample],
        *,
        validation_fraction: float = 0.1,
        seed: int = 0,
    ) -> TrainingData:
        """Deduplicate ``examples`` (first occurrence kept), hash and split them.

        Validation gets ``round(n * validation_fraction)`` examples, at least one when the
        fraction is positive and there are 5 or more examples, never all of them.
        """
        if not 0.0 <= validation_fraction < 1.0:
            raise UsageError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        unique: dict[str, TrainingExample] = {}
        total = 0
        for example in examples:
            total += 1
            unique.setdefault(example.key, example)
        if not unique:
            raise UsageError(
                "no training examples: the teacher produced no traces that pass the metric"
            )
        keys = sorted(unique)
        content = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        n = len(keys)
        n_val = round(n * validation_fraction)
        if validation_fraction > 0 and n >= 5:
            n_val = max(1, n_val)
        n_val = min(n_val, n - 1)
        order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        held_out = set(order[:n_val])
        kept = list(unique.values())
        return cls(
            train=tuple(e for e in kept if e.key not in held_out),
            validation=tuple(e for e in kept if e.key in held_out),
            content_hash=content,
            seed=seed,
            validation_fraction=validation_fraction,
            duplicates=total - n,
        )

    @property
    def examples(self) -> tuple[TrainingExample, ...]:
        return self.train + self.validation

    def manifest(self) -> dict[str, Any]:
        """Counts, hash and split settings (what the run directory's ``data.json`` holds)."""
        per_predictor: dict[str, int] = {}
        for example in self.examples:
            per_predictor[example.predictor] = per_predictor.get(example.predictor, 0) + 1
        return {
            "format": DATA_FORMAT,
            "content_hash": self.content_hash,
            "train": len(self.train),
            "validation": len(self.validation),
            "duplicates_dropped": self.duplicates,
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
            "predictors": dict(sorted(per_predictor.items())),
        }

    def jsonl(self, split: str, form: str) -> str:
        """The JSONL text of ``split`` (train, validation) in ``form`` (chat, completion)."""
        items = {"train": self.train, "validation": self.validation}.get(split)
        if items is None or form not in ("chat", "completion"):
            raise UsageError(
                f"unknown split/form {split!r}/{form!r}; use train|validation and chat|completion"
            )
        render: Callable[[TrainingExample], dict[str, Any]] = (
            TrainingExample.chat_record if form == "chat" else TrainingExample.completion_record
        )
        return "".join(_jsonl_line(render(e)) for e in items)

    def write(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the four JSONL files, ``examples.json`` and ``data.json`` into ``directory``
        (each atomically); returns the JSONL paths by file name."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        digests: dict[str, str] = {}
        for name in _FILES:
            split, form, _ = name.split(".")
            text = self.jsonl(split, form)
            write_text_atomic(target / name, text)
            paths[name] = target / name
            digests[name] = hashlib.sha256(text.encode()).hexdigest()
        write_json_atomic(
            target / "examples.json",
            {
                "train": [e.to_json() for e in self.train],
                "validation": [e.to_json() for e in self.validation],
            },
        )
        write_json_atomic(target / "data.json", {**self.manifest(), "files": digests})
        return paths

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> TrainingData:
        """Read what :meth:`write` wrote (raises ``UsageError`` when it is incomplete)."""
        source = Path(directory)
        try:
            manifest = json.loads((source / "data.json").read_text(encoding="utf-8"))
            examples = json.loads((source / "examples.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{source} holds no readable training data ({exc})") from None
        return cls(
            train=tuple(TrainingExample.from_json(e) for e in examples["train"]),
            validation=tuple(TrainingExample.from_json(e) for e in examples["validation"]),
            content_hash=str(manifest["content_hash"]),
            seed=int(manifest["seed"]),
            validation_fraction=float(manifest["validation_fraction"]),
            duplicates=int(manifest.get("duplicates_dropped") or 0),
        )


# -- the finetuner contract --------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class TunedModel:
    """What a finetuner produced.

    ``lm`` serves the tuned weights (a ``local/...`` LM with a LoRA, or a managed ``ft:``
    model). ``meta`` is recorded in the artifact (base model, adapter hash, rank, target
    modules, hyperparameters, loss per step, wall time, peak memory, job id, ...).
    ``adapter_dir`` is the PEFT adapter folder, when there is one (copied next to the
    artifact on save, for deploy targets that serve LoRA modules).
    """

    lm: LM
    base_model: str
    meta: dict[str, Any]
    adapter_dir: Path | None = None


@runtime_checkable
class Finetuner(Protocol):
    """Trains a model on :class:`TrainingData`.

    ``name`` identifies the finetuner in artifacts; ``base_lm()`` is the LM whose prompt
    format the training data must use (the model before tuning); ``config()`` is its
    settings as JSON. ``train`` must be restartable: called again with the same data and
    ``workdir`` it resumes or returns the finished result instead of training twice.
    """

    name: str

    def base_lm(self) -> LM: ...

    def config(self) -> dict[str, Any]: ...

    def train(
        self,
        data: TrainingData,
        workdir: Path,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> TunedModel: ...
