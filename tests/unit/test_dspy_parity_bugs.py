"""Regressions a DSPy user hits in the first hour: inherited instructions, structural
equality of class-form signatures, cloudpickle of signatures and programs, a process-wide
default LM that threads see, and ``Predict.load_state(p.dump_state())``."""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import cloudpickle
import lmforge as lf
import pytest
from lmforge import settings
from lmforge.testing import FunctionLM


class Undocumented(lf.Signature):
    ticket: str = lf.InputField()
    team: Literal["billing", "tech"] = lf.OutputField()


class Documented(lf.Signature):
    """Route the ticket."""

    ticket: str = lf.InputField()
    team: Literal["billing", "tech"] = lf.OutputField()


class Inherits(Documented):
    pass


def test_undocumented_signature_does_not_inherit_the_base_class_docstring() -> None:
    assert "Typed input and output fields" not in Undocumented.instructions
    assert Undocumented.instructions == "Given the fields `ticket`, produce the fields `team`."
    prompt = lf.Predict(Undocumented).format({"ticket": "x"}, lm=FunctionLM(lambda r: ""))
    assert "Typed input and output fields" not in str(prompt)


def test_a_user_base_docstring_is_still_inherited() -> None:
    assert Inherits.instructions == "Route the ticket."


def test_identical_class_form_signatures_are_equal_and_hash_alike() -> None:
    class Again(lf.Signature):
        ticket: str = lf.InputField()
        team: Literal["billing", "tech"] = lf.OutputField()

    class Other(lf.Signature):
        ticket: str = lf.InputField()
        team: Literal["billing", "sales"] = lf.OutputField()

    assert Again == Undocumented
    assert hash(Again) == hash(Undocumented)
    assert Again != Other
    assert Again != Documented  # instructions differ
    assert Undocumented == lf.Signature.parse("ticket -> team: Literal['billing', 'tech']")
    assert lf.Signature == lf.Signature and lf.Signature != Undocumented


def test_a_signature_with_no_fields_says_so_on_use() -> None:
    class Empty(lf.Signature):
        """Nothing here."""

    with pytest.raises(lf.SignatureError, match="Empty declares no fields"):
        lf.Predict(Empty)


def test_class_form_signatures_and_programs_survive_cloudpickle() -> None:
    class Local(lf.Signature):
        """Pick a team."""

        ticket: str = lf.InputField(desc="the message")
        team: Literal["billing", "tech"] = lf.OutputField()

    restored = pickle.loads(cloudpickle.dumps(Local))
    assert restored == Local
    assert restored.instructions == "Pick a team."
    assert restored.field("ticket").description == "the message"

    program = lf.Predict(Local)
    program.demos = [{"ticket": "refund", "team": "billing"}]
    copy = pickle.loads(cloudpickle.dumps(program))
    assert copy.signature == program.signature
    assert copy.demos == program.demos
    lm = FunctionLM(lambda request: "[[ ## team ## ]]\ntech")
    with lf.use(lm=lm):
        assert copy(ticket="crash").team == "tech"


def test_configure_sets_a_default_that_threads_see_and_use_overrides() -> None:
    default = FunctionLM(lambda request: "[[ ## answer ## ]]\ndefault", model="fake/default")
    scoped = FunctionLM(lambda request: "[[ ## answer ## ]]\nscoped", model="fake/scoped")
    qa = lf.Predict("question -> answer")
    previous = settings.current().lm
    try:
        lf.configure(lm=default)
        with lf.use(lm=scoped):
            assert qa(question="q").answer == "scoped"
            with ThreadPoolExecutor(2) as pool:  # a user's own threads: the process default
                assert pool.submit(lambda: qa(question="q").answer).result() == "default"
        assert qa(question="q").answer == "default"
        seen: list[str] = []
        thread = threading.Thread(target=lambda: seen.append(qa(question="q").answer))
        thread.start()
        thread.join()
        assert seen == ["default"]
    finally:
        lf.configure(lm=previous)


def test_configure_after_entering_a_block_shows_through_for_keys_the_block_keeps() -> None:
    lm = FunctionLM(lambda request: "[[ ## answer ## ]]\nlate")
    previous = settings.current().lm
    try:
        with lf.use(cache=False):
            lf.configure(lm=lm)
            assert settings.current().lm is lm
            assert settings.current().cache is False
    finally:
        lf.configure(lm=previous)


def test_configure_checks_its_settings() -> None:
    with pytest.raises(lf.UsageError, match=r"lf.configure\(\) got unknown setting"):
        lf.configure(model="gpt")
    with pytest.raises(lf.UsageError, match=r"needs an lf\.LM"):
        lf.configure(lm="openai/gpt-4o-mini")


def test_no_lm_error_names_both_sources_and_thread_behaviour() -> None:
    qa = lf.Predict("question -> answer")

    def call() -> None:
        qa(question="q")

    assert settings.current().lm is None
    with ThreadPoolExecutor(1) as pool, pytest.raises(lf.UsageError) as info:
        pool.submit(call).result()
    message = str(info.value)
    assert "lf.configure(lm=" in message and "lf.use(lm=" in message
    assert "copy_context" in message


def test_predict_load_state_round_trips_its_own_dump_state() -> None:
    source = lf.Predict(Documented)
    source.demos = [{"ticket": "refund please", "team": "billing"}]
    target = lf.Predict(Documented).load_state(source.dump_state())
    assert target.demos == source.demos
    assert target.signature == source.signature
    # the program-level form keeps working
    again = lf.Predict(Documented).load_state(source.state())
    assert again.demos == source.demos
