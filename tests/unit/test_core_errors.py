"""User mistakes made the way a new user makes them: each one is a one-line lmforge error
that says what to do, never an exception from inside a dependency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.testing import ScriptedLM


def mistake(func: Callable[[], Any]) -> lf.LMForgeError:
    with pytest.raises(lf.LMForgeError) as info:
        func()
    message = str(info.value)
    assert message and "\n" not in message, message
    assert "Traceback" not in message
    return info.value


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("question answer", "e.g. 'question -> answer'"),
        ("a -> ", "no output fields after '->'"),
        ("a: Foo -> b", "types={'Foo': Foo}"),
        ("question: string -> answer", "types={'string': string}"),
        ("a b -> c", "write them as 'name: type"),
        ("q -> a: list[", "write them as 'name: type"),
    ],
)
def test_bad_signature_strings_through_predict(text: str, hint: str) -> None:
    error = mistake(lambda: lf.Predict(text))
    assert isinstance(error, lf.SignatureError) and isinstance(error, lf.UsageError)
    assert hint in str(error)


def test_missing_input_names_the_inputs_to_pass() -> None:
    predictor = lf.Predict("question, context -> answer", lm=ScriptedLM(["[[ ## answer ## ]]\nx"]))
    error = mistake(lambda: predictor(question="only one"))
    assert isinstance(error, lf.UsageError)
    assert "missing input(s) ['context']" in str(error) and "context=..., question=..." in str(
        error
    )


def test_calling_without_any_lm_says_how_to_configure_one() -> None:
    error = mistake(lambda: lf.Predict("question -> answer")(question="hi"))
    assert isinstance(error, lf.UsageError)
    assert "lf.use(lm=lf.LM(" in str(error) and "lm=" in str(error)


def test_loading_a_non_artifact_file(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n{"question": "r", "answer": "b"}\n')
    error = mistake(lambda: lf.load(data))
    assert isinstance(error, lf.ArtifactError) and "is not an lmforge artifact" in str(error)


def test_other_common_mistakes() -> None:
    assert "by name" in str(mistake(lambda: lf.Predict("question -> answer")("hi")))
    assert "known settings are" in str(mistake(lambda: lf.use(model="x").__enter__()))
    assert "request options are" in str(mistake(lambda: lf.Predict("q -> a", temp=0.1)))
    assert "with_inputs" in str(mistake(lambda: lf.Example(q="x").inputs()))
    assert "its keys are" in str(mistake(lambda: lf.Example(q="x").with_inputs("question")))
    assert "api_key=" in str(mistake(lambda: lf.LM("openai/gpt-4o-mini", api_token="x")))
    assert "choose one of" in str(
        mistake(
            lambda: lf.Predict("q -> a").load_state(
                {
                    "self": {
                        "signature": lf.Signature.parse("q -> a").to_json(),
                        "adapter": {"type": "xml"},
                    }
                }
            )
        )
    )
    assert "expected a signature" in str(mistake(lambda: lf.Predict(dict)))  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="immutable"):
        lf.Prediction(a=1).a = 2  # type: ignore[misc]


def test_missing_extra_names_the_extra() -> None:
    error = lf.MissingExtraError("optuna", "optimize", "Bayesian instruction search")
    assert isinstance(error, ImportError) and isinstance(error, lf.LMForgeError)
    assert "pip install 'lmforge[optimize]'" in str(error) and "\n" not in str(error)


def test_error_tree() -> None:
    for cls in (
        lf.UsageError,
        lf.SignatureError,
        lf.ParseError,
        lf.LMError,
        lf.RateLimitError,
        lf.LMTimeoutError,
        lf.ContextWindowError,
        lf.AuthenticationError,
        lf.ProviderError,
        lf.ArtifactError,
        lf.MissingExtraError,
        lf.BudgetExceededError,
        lf.BatchError,
    ):
        assert issubclass(cls, lf.LMForgeError), cls
    for cls in (
        lf.RateLimitError,
        lf.LMTimeoutError,
        lf.ContextWindowError,
        lf.AuthenticationError,
        lf.ProviderError,
    ):
        assert issubclass(cls, lf.LMError)
    assert lf.RateLimitError("x").retryable and lf.LMTimeoutError("x").retryable
    assert not lf.AuthenticationError("x").retryable and not lf.ContextWindowError("x").retryable


def test_model_name_instead_of_lm_object() -> None:
    for make in (
        lambda: lf.Predict("q -> a", lm="openai/gpt-4o-mini"),  # type: ignore[arg-type]
        lambda: lf.use(lm="openai/gpt-4o-mini").__enter__(),
    ):
        error = mistake(make)
        assert "pass lf.LM('openai/gpt-4o-mini')" in str(error)
    assert "got int" in str(mistake(lambda: lf.use(lm=3).__enter__()))


def test_adapter_name_instead_of_adapter_object() -> None:
    error = mistake(lambda: lf.Predict("q -> a", adapter="json"))  # type: ignore[arg-type]
    assert "lf.JSONAdapter()" in str(error)
    assert "lf.ChatAdapter()" in str(mistake(lambda: lf.use(adapter="xml").__enter__()))


def test_bad_per_call_config() -> None:
    predictor = lf.Predict("q -> a", lm=ScriptedLM(["[[ ## a ## ]]\nx"] * 3))
    assert "temperature" in str(mistake(lambda: predictor(q="x", config={"temprature": 1})))
    assert "must be a dict" in str(mistake(lambda: predictor(q="x", config=0.5)))
    assert predictor(q="x", config={"temperature": 1}).a == "x"


def test_class_signature_with_locally_defined_type() -> None:
    import pydantic

    class Local(pydantic.BaseModel):
        x: int

    def declare() -> None:
        class Broken(lf.Signature):
            q: str = lf.InputField()
            a: Local = lf.OutputField()

    error = mistake(declare)  # this file uses `from __future__ import annotations`
    assert isinstance(error, lf.SignatureError)
    assert "'Local'" in str(error) and "module level" in str(error)


def test_saving_to_a_directory_or_unwritable_place(tmp_path: Path) -> None:
    error = mistake(lambda: lf.Predict("q -> a").save(tmp_path))
    assert isinstance(error, lf.UsageError) and "program.json" in str(error)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error = mistake(lambda: lf.Predict("q -> a").save(blocker / "sub" / "p.json"))
    assert isinstance(error, lf.ArtifactError) and "cannot write" in str(error)
