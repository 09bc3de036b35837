"""Training data for fine-tunes: exact JSONL for a fixed trace, the deployed prompt format
(adapter, demos, chat vs text mode), dedup, content hash stability and the seeded split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lmforge as lf
import pytest
from lmforge.errors import ParseError, UsageError
from lmforge.finetune import TrainingData, TrainingExample, render_example, target_text
from lmforge.testing import ScriptedLM


class Route(lf.Signature):
    """Route the ticket."""

    ticket: str = lf.InputField()
    team: Literal["billing", "technical"] = lf.OutputField()


def _text_lm() -> lf.LM:
    return ScriptedLM(["unused"], model_type="text")


def test_completion_form_is_exactly_the_deployed_prompt_and_answer() -> None:
    predictor = lf.Predict(Route)
    example = render_example(
        "self", predictor, {"ticket": "charged twice"}, {"team": "billing"}, lm=_text_lm()
    )
    prompt = (
        "Route the ticket.\nTeam is one of: billing, technical.\n\nTicket: charged twice\nTeam:"
    )
    assert example.completion_record() == {"prompt": prompt, "completion": " billing"}
    data = TrainingData.build([example], validation_fraction=0.0)
    assert data.jsonl("train", "completion") == (
        '{"prompt": "Route the ticket.\\nTeam is one of: billing, technical.\\n\\n'
        'Ticket: charged twice\\nTeam:", "completion": " billing"}\n'
    )
    assert data.jsonl("train", "chat") == (
        '{"messages": [{"role": "user", "content": "Route the ticket.\\nTeam is one of: '
        'billing, technical.\\n\\nTicket: charged twice\\nTeam:"}, '
        '{"role": "assistant", "content": " billing"}]}\n'
    )
    # The prompt is byte-identical to what the predictor sends the same model.
    assert predictor.format({"ticket": "charged twice"}, lm=_text_lm()).text == prompt


def test_chat_form_uses_the_chat_adapter_for_chat_models() -> None:
    lm = ScriptedLM(["unused"])
    example = render_example(
        "route", lf.Predict(Route), {"ticket": "app crashes"}, {"team": "technical"}, lm=lm
    )
    record = example.chat_record()
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert (
        record["messages"][-1]["content"] == "[[ ## team ## ]]\ntechnical\n\n[[ ## completed ## ]]"
    )
    assert "app crashes" in record["messages"][1]["content"]
    # the text form joins the messages as lf.LM.request does for text models
    assert example.prompt == "\n\n".join(m["content"] for m in record["messages"][:-1])


def test_demos_are_in_the_prompt_only_when_asked() -> None:
    predictor = lf.Predict(Route, demos=[{"ticket": "refund me", "team": "billing"}])
    without = render_example("self", predictor, {"ticket": "x"}, {"team": "billing"}, lm=_text_lm())
    with_demos = render_example(
        "self", predictor, {"ticket": "x"}, {"team": "billing"}, lm=_text_lm(), include_demos=True
    )
    assert "refund me" not in without.prompt
    assert "Ticket: refund me\nTeam: billing" in with_demos.prompt


def test_json_and_multi_field_targets_parse_back() -> None:
    signature = lf.Signature.parse("ticket -> team, urgency: int")
    outputs = {"team": "billing", "urgency": 3}
    for adapter in (lf.CompletionAdapter(), lf.ChatAdapter(), lf.JSONAdapter()):
        text = target_text(adapter, signature, outputs)
        assert adapter.parse(signature, text) == outputs
    assert target_text(lf.CompletionAdapter(), signature, outputs) == " billing\nUrgency: 3"


def test_targets_that_do_not_parse_back_are_refused() -> None:
    with pytest.raises(ParseError):
        render_example("self", lf.Predict(Route), {"ticket": "x"}, {"team": "sales"}, lm=_text_lm())
    with pytest.raises(UsageError, match="every output field"):
        target_text(lf.ChatAdapter(), lf.Predict(Route).signature, {})


def _examples(n: int) -> list[TrainingExample]:
    return [
        TrainingExample("self", ({"role": "user", "content": f"q{i}"},), f"q{i}", f" a{i}")
        for i in range(n)
    ]


def test_dedup_keeps_first_occurrence_and_counts_duplicates() -> None:
    items = _examples(3)
    data = TrainingData.build([*items, items[0], items[2]], validation_fraction=0.0)
    assert data.train == tuple(items)
    assert data.duplicates == 2
    assert data.manifest()["duplicates_dropped"] == 2


def test_content_hash_is_stable_and_order_independent() -> None:
    items = _examples(6)
    first = TrainingData.build(items, seed=0)
    assert first.content_hash == TrainingData.build(list(reversed(items)), seed=7).content_hash
    # pinned: the hash is part of artifacts and run identities, so it must never drift
    assert first.content_hash == "5c5cfbf949f7e8645a27cbdde89bcf8b5760cdd5dbde03b6d255810b3728825f"
    assert items[0].key == "418bf28bbc1f67153a1ce7883ba9c6481da2bde6fd802fe5cc165661cb2ca693"
    changed = [*items[:-1], TrainingExample("self", items[-1].messages, "q5", " other")]
    assert TrainingData.build(changed).content_hash != first.content_hash


def test_split_is_seeded_and_independent_of_order() -> None:
    items = _examples(20)
    a = TrainingData.build(items, validation_fraction=0.25, seed=1)
    b = TrainingData.build(list(reversed(items)), validation_fraction=0.25, seed=1)
    c = TrainingData.build(items, validation_fraction=0.25, seed=2)
    assert len(a.validation) == 5 and len(a.train) == 15
    assert {e.key for e in a.validation} == {e.key for e in b.validation}
    assert {e.key for e in a.validation} != {e.key for e in c.validation}
    assert TrainingData.build(_examples(5), validation_fraction=0.05).validation  # at least one
    assert len(TrainingData.build(_examples(1), validation_fraction=0.5).train) == 1  # never all


def test_empty_data_is_an_error() -> None:
    with pytest.raises(UsageError, match="no training examples"):
        TrainingData.build([])


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    data = TrainingData.build(_examples(10), validation_fraction=0.2, seed=3)
    paths = data.write(tmp_path)
    assert sorted(paths) == sorted(
        [
            "train.chat.jsonl",
            "train.completion.jsonl",
            "validation.chat.jsonl",
            "validation.completion.jsonl",
        ]
    )
    lines = (tmp_path / "train.completion.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(set(json.loads(x)) == {"prompt", "completion"} for x in lines)
    manifest = json.loads((tmp_path / "data.json").read_text())
    assert manifest["content_hash"] == data.content_hash and manifest["validation"] == 2
    assert TrainingData.read(tmp_path) == data
