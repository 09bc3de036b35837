"""Demo selection for small models: class-balanced sets, label interleaving, and KNNFewShot
(per-input nearest demos, saved in the artifact and rebuilt at load)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Literal

import lmforge as lf
import pytest
from lmforge.lm.types import LMRequest
from lmforge.modules import knn_demos
from lmforge.modules.demo_sets import balanced, closed_output, interleave
from lmforge.optimizers import BootstrapFewShot, KNNFewShot, LabeledFewShot
from lmforge.targets.program import required_extras
from lmforge.testing import FunctionLM

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")


class Topic(lf.Signature):
    """Classify the text by topic."""

    text: str = lf.InputField()
    topic: Literal["weather", "sports", "finance"] = lf.OutputField()


ROWS = [
    ("heavy rain and storm in the forecast", "weather"),
    ("sunny forecast with a heat wave", "weather"),
    ("football team wins the match", "sports"),
    ("tennis player wins the final", "sports"),
    ("stock market falls sharply", "finance"),
    ("bank raises interest rates", "finance"),
]
TRAIN = [lf.Example(text=t, topic=y).with_inputs("text") for t, y in ROWS]
# Skewed: ten rows of one label, one of each other.
SKEWED = [
    *(lf.Example(text=f"windy day {i}", topic="weather").with_inputs("text") for i in range(10)),
    lf.Example(text="cup final tonight", topic="sports").with_inputs("text"),
    lf.Example(text="shares slide", topic="finance").with_inputs("text"),
]


def recording_lm(prompts: list[str]) -> FunctionLM:
    def answer(request: LMRequest) -> str:
        prompts.append(request.as_text())
        return "[[ ## topic ## ]]\nsports\n\n[[ ## completed ## ]]"

    return FunctionLM(answer)


def demo_texts(prompt: str) -> list[str]:
    """The demo inputs shown in a prompt, in order (the call's own input excluded)."""
    shown = [text for text, _ in ROWS if text in prompt]
    return sorted(shown, key=prompt.index)


# -- class-balanced sets and ordering ------------------------------------------------------


def test_closed_output_finds_literal_enum_and_bool_fields() -> None:
    assert closed_output(Topic) == "topic"
    assert closed_output(lf.Signature.parse("q -> ok: bool")) == "ok"
    assert closed_output(lf.Signature.parse("q -> answer: str")) is None


def test_balanced_takes_labels_round_robin_and_is_seeded() -> None:
    rows = [r.to_dict() for r in SKEWED]
    chosen = balanced(rows, 3, "topic", random.Random(0))
    assert sorted(d["topic"] for d in chosen) == ["finance", "sports", "weather"]
    assert chosen == balanced(rows, 3, "topic", random.Random(0))
    # Without a generator: input order, the first row of each label in turn.
    assert [d["text"] for d in balanced(rows, 4, "topic")] == [
        "windy day 0",
        "cup final tonight",
        "shares slide",
        "windy day 1",
    ]


def test_interleave_lets_labels_take_turns_in_first_seen_order() -> None:
    demos = [{"y": y, "i": i} for i, y in enumerate("aaabbc")]
    assert [d["y"] for d in interleave(demos, "y")] == list("abcaba")
    assert [d["i"] for d in interleave(demos, "y")] == [0, 3, 5, 1, 4, 2]


def test_labeled_few_shot_shows_every_label_on_skewed_data() -> None:
    lm = recording_lm([])
    for seed in range(5):
        program = LabeledFewShot(k=3).compile(
            lf.Predict(Topic), SKEWED, metric=lf.metrics.exact_match, lm=lm, seed=seed
        )
        labels = [d["topic"] for d in program.predictors()[0].demos]
        assert sorted(labels) == ["finance", "sports", "weather"], seed


def test_labeled_few_shot_order_varies_the_last_label_and_never_repeats_it() -> None:
    lasts = set()
    for seed in range(8):
        program = LabeledFewShot(k=6).compile(
            lf.Predict(Topic), TRAIN, metric=lf.metrics.exact_match, lm=recording_lm([]), seed=seed
        )
        labels = [d["topic"] for d in program.predictors()[0].demos]
        assert all(a != b for a, b in itertools.pairwise(labels)), labels
        lasts.add(labels[-1])
    assert len(lasts) > 1  # the label shown last depends on the seed, not on the data order


def test_unbalanced_and_open_outputs_keep_the_plain_sample() -> None:
    lm = recording_lm([])
    plain = LabeledFewShot(k=3, balanced=False).compile(
        lf.Predict(Topic), SKEWED, metric=lf.metrics.exact_match, lm=lm, seed=0
    )
    open_program = LabeledFewShot(k=3).compile(
        lf.Predict("text -> topic"), SKEWED, metric=lf.metrics.exact_match, lm=lm, seed=0
    )
    demos = plain.predictors()[0].demos
    assert len(demos) == 3 and open_program.predictors()[0].demos == demos


def test_bootstrap_labeled_demos_are_class_balanced() -> None:
    compiled = BootstrapFewShot(max_bootstrapped_demos=0, max_labeled_demos=3).compile(
        lf.Predict(Topic), SKEWED, metric=lf.metrics.exact_match, lm=recording_lm([]), seed=0
    )
    labels = [d["topic"] for d in compiled.predictors()[0].demos]
    assert sorted(labels) == ["finance", "sports", "weather"]


# -- KNNFewShot ------------------------------------------------------------------------------


def knn(prompts: list[str], **options: object) -> lf.Module:
    return KNNFewShot(**options).compile(  # type: ignore[arg-type]
        lf.Predict(Topic), TRAIN, metric=lf.metrics.exact_match, lm=recording_lm(prompts), seed=0
    )


def test_knn_shows_each_input_its_nearest_training_rows() -> None:
    prompts: list[str] = []
    program = knn(prompts, k=2)
    program(text="who won the football match and the final?")
    program(text="will the bank cut rates as the market falls?")
    assert demo_texts(prompts[0]) == [
        "football team wins the match",
        "tennis player wins the final",
    ]
    assert sorted(demo_texts(prompts[1])) == [
        "bank raises interest rates",
        "stock market falls sharply",
    ]
    assert program.predictors()[0].demos == ()  # nothing fixed: every demo is per input


def test_knn_balanced_shows_the_nearest_row_of_every_label_nearest_first() -> None:
    prompts: list[str] = []
    program = knn(prompts, k=3, balanced=True)
    program(text="storm and rain forecast")
    shown = demo_texts(prompts[0])
    assert len(shown) == 3 and shown[0] == "heavy rain and storm in the forecast"
    assert {dict(ROWS)[text] for text in shown} == {"weather", "sports", "finance"}


def test_knn_nearest_last_puts_the_best_match_right_before_the_input() -> None:
    prompts: list[str] = []
    knn(prompts, k=2, order="nearest_last")(text="storm and rain forecast")
    assert demo_texts(prompts[0])[-1] == "heavy rain and storm in the forecast"


def test_knn_bad_order_is_a_usage_error() -> None:
    with pytest.raises(lf.UsageError, match="nearest_last"):
        KNNFewShot(order="random")


def test_knn_artifact_round_trip_rebuilds_the_selection(tmp_path: Path) -> None:
    prompts: list[str] = []
    program = knn(prompts, k=2, balanced=True)
    path = tmp_path / "knn.json"
    program.save(path)
    saved = json.loads(path.read_text())
    selector = saved["predictors"]["self"]["demo_selector"]
    assert selector["type"] == "lmforge.modules.knn_demos:KNNDemos"
    assert selector["config"]["k"] == 2 and selector["config"]["balanced"] is True
    assert {row["text"] for row in selector["config"]["pool"]} == {t for t, _ in ROWS}
    loaded = lf.load(path)
    loaded.set_lm(recording_lm(prompts))
    program(text="stock market news")
    loaded(text="stock market news")
    assert prompts[0] == prompts[1]
    # A copy shares the built index rather than rebuilding it.
    assert loaded.deepcopy().predictors()[0].demo_selector is loaded.predictors()[0].demo_selector


def test_a_tampered_or_foreign_selector_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "knn.json"
    knn([], k=2).save(path)
    document = json.loads(path.read_text())
    document["predictors"]["self"]["demo_selector"]["config"]["k"] = 5
    path.write_text(json.dumps(document))
    with pytest.raises(lf.ArtifactError):
        lf.load(path)  # the hash no longer matches
    from lmforge.artifact import _digest

    document["predictors"]["self"]["demo_selector"]["type"] = "json:JSONDecoder"
    del document["sha256"]
    document["sha256"] = _digest(document)
    path.write_text(json.dumps(document))
    with pytest.raises(lf.ArtifactError, match="not trusted"):
        lf.load(path)


def test_the_index_is_built_once_not_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []

    class Counting(knn_demos.BM25Retriever):
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(knn_demos, "BM25Retriever", Counting)
    program = knn([], k=2)
    for text in ("rain", "football", "bank rates"):
        program(text=text)
    assert built == [1]


def test_plain_predictors_save_no_selector_and_reset_copy_clears_it() -> None:
    assert "demo_selector" not in lf.Predict(Topic).dump_state()
    program = knn([], k=2)
    assert program.reset_copy().predictors()[0].demo_selector is None


def test_a_knn_program_needs_the_retrieval_extra_to_serve() -> None:
    assert required_extras(lf.Predict(Topic)) == ["serve"]
    assert required_extras(knn([], k=2)) == ["serve", "retrieval"]


VOCAB = ("rain", "storm", "forecast", "football", "match", "final", "bank", "market", "rates")


def bag_of_words(texts: list[str]) -> list[list[float]]:
    """A tiny deterministic embedding: counts of a fixed vocabulary (plus a bias)."""
    return [[*(float(text.count(word)) for word in VOCAB), 0.01] for text in texts]


def test_knn_with_an_embedder_ranks_by_cosine_and_round_trips(tmp_path: Path) -> None:
    prompts: list[str] = []
    program = knn(prompts, k=1, embedder=bag_of_words)
    assert required_extras(program) == ["serve"]  # BM25 is not used: no retrieval extra
    program(text="will the bank cut rates?")
    assert demo_texts(prompts[0]) == ["bank raises interest rates"]
    path = tmp_path / "knn.json"
    program.save(path)
    saved = json.loads(path.read_text())["predictors"]["self"]["demo_selector"]["config"]
    assert saved["embedder"] == f"{__name__}:bag_of_words"
    with pytest.raises(lf.ArtifactError, match="not trusted"):
        lf.load(path)  # the embedder's module must be trusted to be imported
    loaded = lf.load(path, trusted_modules=[__name__])
    loaded.set_lm(recording_lm(prompts))
    loaded(text="football match tonight")
    assert demo_texts(prompts[1]) == ["football team wins the match"]


def test_an_embedder_returning_the_wrong_count_is_a_usage_error() -> None:
    with pytest.raises(lf.UsageError, match="one vector per text"):
        knn_demos.KNNDemos(
            [{"text": "a", "topic": "sports"}], 1, fields=["text"], embedder=f"{__name__}:short"
        )


def short(texts: list[str]) -> list[list[float]]:
    return []


def test_async_calls_search_demos_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    prompts: list[str] = []
    program = knn(prompts, k=1)
    selector = program.predictors()[0].demo_selector
    assert selector is not None
    threads: list[str] = []
    select = selector.select

    def recording_select(inputs: dict[str, object]) -> list[dict[str, object]]:
        threads.append(threading.current_thread().name)
        return select(inputs)

    monkeypatch.setattr(selector, "select", recording_select)

    async def main() -> str:
        await program.acall(text="football match")
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert threads and threads[0] != loop_thread
    assert demo_texts(prompts[0]) == ["football team wins the match"]
