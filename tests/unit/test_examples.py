"""The example programs and their datasets, run against fake LMs (no model needed)."""

from __future__ import annotations

import importlib
import json
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.examples import EXAMPLES, SPLITS, load_split
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM

CLASSIFIERS = {
    "ticket_router": ("tickets", "ticket", "team", 5),
    "expense_categoriser": ("expenses", "line", "category", 8),
    "intent_classifier": ("intents", "text", "intent", 8),
}
MODULES = ("ticket_router", "expense_categoriser", "contact_extraction", "intent_classifier")


def module(name: str) -> Any:
    return importlib.import_module(f"lmforge.examples.{name}")


@pytest.mark.parametrize("name", MODULES)
def test_example_modules_define_program_metric_load_main(name: str) -> None:
    mod = module(name)
    assert isinstance(mod.program, lf.Predict)
    assert isinstance(mod.make_program(), lf.Predict) and mod.make_program() is not mod.program
    assert callable(mod.metric) and callable(mod.main)
    assert all(isinstance(e, lf.Example) for e in mod.load("dev"))


@pytest.mark.parametrize("dataset", sorted(EXAMPLES))
def test_splits_are_disjoint_and_inputs_marked(dataset: str) -> None:
    seen: dict[str, str] = {}
    for split in SPLITS:
        for example in load_split(dataset, split):
            assert set(example.inputs()) == set(EXAMPLES[dataset])
            key = json.dumps({k: example[k] for k in EXAMPLES[dataset]})
            assert key not in seen, f"{dataset}: {key[:60]} is in both {seen.get(key)} and {split}"
            seen[key] = split


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_datasets_are_balanced_over_valid_labels(name: str) -> None:
    dataset, _, label, n_labels = CLASSIFIERS[name]
    output = module(name).make_program().signature.output_fields[0]
    allowed = set(typing.get_args(output.annotation))
    assert len(allowed) == n_labels
    sizes = {}
    for split in SPLITS:
        counts = Counter(e[label] for e in load_split(dataset, split))
        assert set(counts) == allowed, f"{split} misses labels {allowed - set(counts)}"
        assert max(counts.values()) - min(counts.values()) <= 1
        sizes[split] = sum(counts.values())
    assert 30 <= sizes["train"] <= 60 and 20 <= sizes["dev"] <= 30 and 20 <= sizes["test"] <= 30


def test_contact_metric_scores_fields() -> None:
    mod = module("contact_extraction")
    example = mod.load("test")[0]
    gold = mod.Contact.model_validate(example.contact)
    assert mod.metric(example, lf.Prediction(contact=gold)) == 1.0
    half = gold.model_copy(update={"email": None, "phone": "nope"})
    assert mod.metric(example, lf.Prediction(contact=half)) == 0.5
    assert mod.metric(example, lf.Prediction(contact={"name": gold.name.upper()})) == 0.25 * (
        1 + (gold.company is None) + (gold.email is None) + (gold.phone is None)
    )


def labeller(dataset: str, label: str) -> FunctionLM:
    """A text-mode fake that answers each prompt's last input with its true label."""
    key = EXAMPLES[dataset][0]
    truth = {e[key]: e[label] for split in SPLITS for e in load_split(dataset, split)}
    prefix = f"{key.capitalize()}: "

    def reply(request: LMRequest) -> str:
        text = request.prompt or ""
        line = [ln for ln in text.splitlines() if ln.startswith(prefix)][-1]
        return " " + truth[line[len(prefix) :]]

    return FunctionLM(reply, model_type="text")


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_programs_run_through_the_completion_adapter(name: str) -> None:
    dataset, _, label, _ = CLASSIFIERS[name]
    mod = module(name)
    lm = labeller(dataset, label)
    with lf.use(lm=lm):
        result = lf.evaluate(mod.make_program(), mod.load("test"), mod.metric, progress=False)
    assert result.score == 1.0 and result.num_failures == 0
    request = lm.calls[0]
    assert request.constraint is not None
    assert set(request.constraint.segments[1].choices or ()) == set(
        typing.get_args(mod.make_program().signature.output_fields[0].annotation)
    )


def test_contact_program_parses_json_output() -> None:
    mod = module("contact_extraction")
    example = mod.load("test")[0]
    lm = FunctionLM(lambda request: " " + json.dumps(example.contact), model_type="text")
    with lf.use(lm=lm):
        prediction = mod.make_program()(text=example.text)
    assert isinstance(prediction.contact, mod.Contact)
    assert mod.metric(example, prediction) == 1.0


def test_example_main_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = module("ticket_router")
    fake = labeller("tickets", "team")
    monkeypatch.setattr(mod.lf, "LM", lambda model=None: fake)
    out = tmp_path / "router.json"
    mod.main(["--demos", "4", "--out", str(out)])
    loaded = lf.load(out)
    assert len(loaded.predictors()[0].demos) == 4
    assert "100% zero-shot -> 100% with 4 demos" in capsys.readouterr().out


def test_contact_metric_accepts_the_model_a_loaded_artifact_rebuilds() -> None:
    from lmforge.fieldtypes import schema_of, type_from_schema

    mod = module("contact_extraction")
    example = mod.load("test")[0]
    rebuilt = type_from_schema(schema_of(mod.Contact), "Contact")
    assert rebuilt is not mod.Contact
    assert mod.metric(example, lf.Prediction(contact=rebuilt(**example.contact))) == 1.0
