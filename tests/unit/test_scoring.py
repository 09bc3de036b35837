"""Label scoring of closed outputs (lmforge.scoring) and LM.score, with fake backends."""

from __future__ import annotations

import asyncio
import enum
import json
import math
from typing import Any, Literal

import lmforge as lf
import pytest
from lmforge.budget import enforce
from lmforge.errors import ArtifactError, BudgetExceededError, UsageError
from lmforge.lm.openai_scoring import parse_scores, scoring_payload
from lmforge.lm.retry import RetryPolicy
from lmforge.lm.types import LMRequest, ScoringBackend, Usage
from lmforge.testing import ScoringLM, ScriptedLM
from test_openai_backend import FakeServer

TEAMS = ("billing", "sales", "support")


class Route(lf.Signature):
    """Route the ticket."""

    ticket: str = lf.InputField()
    team: Literal["billing", "sales", "support"] = lf.OutputField()


def probs(scores: dict[str, float]) -> dict[str, float]:
    total = sum(math.exp(v) for v in scores.values())
    return {k: math.exp(v) / total for k, v in scores.items()}


SCORES = {"billing": -2.0, "sales": -0.5, "support": -1.5}


# -- Predict answers closed outputs by scoring -------------------------------------------


@pytest.mark.parametrize("model_type", ["text", "chat"])
def test_scoring_picks_the_most_probable_label_with_its_normalised_probability(
    model_type: Literal["chat", "text"],
) -> None:
    lm = ScoringLM(SCORES, model_type=model_type)
    prediction = lf.Predict(Route, lm=lm)(ticket="how much is the pro plan?")
    assert prediction.team == "sales"
    assert prediction.confidence == pytest.approx(probs(SCORES)["sales"])
    assert prediction.label_probs == pytest.approx(probs(SCORES))
    assert sum(prediction.label_probs.values()) == pytest.approx(1.0)
    assert lm.calls == []  # nothing was generated
    ((request, continuations),) = lm.scored
    # Each continuation is the adapter's full reply for that label: it parses back to it.
    assert [c for c in continuations if "sales" in c] and len(continuations) == 3
    if model_type == "text":
        assert continuations == (" billing", " sales", " support")
        assert request.prompt is not None and request.prompt.endswith("Team:")


def test_async_calls_score_too() -> None:
    lm = ScoringLM(SCORES)
    prediction = asyncio.run(lf.Predict(Route, lm=lm).acall(ticket="x"))
    assert (prediction.team, len(lm.scored)) == ("sales", 1)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_enum_and_bool_outputs_are_scored_and_typed() -> None:
    class Pick(lf.Signature):
        """Pick."""

        text: str = lf.InputField()
        colour: Colour = lf.OutputField()

    class Check(lf.Signature):
        """Check."""

        text: str = lf.InputField()
        ok: bool = lf.OutputField()

    assert lf.Predict(Pick, lm=ScoringLM({"red": -3.0, "blue": -0.1}))(text="x").colour is (
        Colour.BLUE
    )
    lm = ScoringLM({"true": -2.0, "false": -0.2})
    prediction = lf.Predict(Check, lm=lm)(text="x")
    assert prediction.ok is False and prediction.label_probs is not None
    assert set(prediction.label_probs) == {"true", "false"}


def test_a_backend_that_cannot_score_falls_back_to_generation() -> None:
    lm = ScoringLM(SCORES, scorable=False, replies=[" support"])
    prediction = lf.Predict(Route, lm=lm)(ticket="x")
    assert prediction.team == "support" and prediction.confidence is None
    assert len(lm.calls) == 1 and lm.scored == []
    # A plain backend without the capability generates as it always did.
    chat = ScriptedLM(["[[ ## team ## ]]\nbilling"])
    assert not isinstance(chat.backend, ScoringBackend)
    assert lf.Predict(Route, lm=chat)(ticket="x").confidence is None


def test_open_outputs_sampling_and_decode_generate_keep_generating() -> None:
    lm = ScoringLM(SCORES, replies=[" support", " billing", " Paris"], model_type="text")
    assert lf.Predict(Route, lm=lm, decode="generate")(ticket="x").team == "support"
    assert lf.Predict(Route, lm=lm, temperature=0.7)(ticket="x").team == "billing"
    assert lf.Predict("question -> answer", lm=lm)(question="capital?").answer == "Paris"
    assert lm.scored == []


def test_decode_score_refuses_what_it_cannot_score() -> None:
    with pytest.raises(UsageError, match="decode='score' needs one Literal"):
        lf.Predict("question -> answer", lm=ScoringLM({}), decode="score")(question="q")
    with pytest.raises(UsageError, match="cannot score"):
        lf.Predict(Route, lm=ScoringLM(SCORES, scorable=False), decode="score")(ticket="x")
    with pytest.raises(UsageError, match="must be 'auto', 'score' or 'generate'"):
        lf.Predict(Route, decode="beam")  # type: ignore[arg-type]


def test_set_decode_switches_every_predictor_of_a_program() -> None:
    lm = ScoringLM(SCORES, replies=[" support"])
    program = lf.Predict(Route, lm=lm)
    lf.scoring.set_decode(program, "generate")
    assert program(ticket="x").team == "support" and lm.scored == []


def test_a_scored_call_is_traced_and_kept_in_history() -> None:
    lm = ScoringLM(SCORES)
    program = lf.Predict(Route, lm=lm)
    with lf.track() as tracker:
        program(ticket="x")
    (call,) = tracker.calls
    assert call.output == " sales"
    assert call.request.params["score_continuations"] == [" billing", " sales", " support"]
    assert program.history[-1].output == " sales"


# -- LM.score: cache, budgets, errors ------------------------------------------------------


def test_lm_score_is_cached_per_continuation_set(tmp_path: Any) -> None:
    lm = ScoringLM(SCORES, cache=tmp_path)
    request = lm.request(prompt="Team:")
    first = lm.score(request, [" billing", " sales"])
    assert lm.score(request, [" billing", " sales"]) == first
    assert len(lm.scored) == 1  # the second came from the cache
    lm.score(request, [" sales", " support"])
    assert len(lm.scored) == 2  # other continuations: another key
    # A completion of the same request is not answered by the scoring entry.
    assert lm.cache is not None and lm.cache.get(request) is None


def test_lm_score_records_the_tokens_read_also_on_a_cache_hit(tmp_path: Any) -> None:
    lm = ScoringLM(SCORES, cache=tmp_path)
    request = lm.request(prompt="Route the ticket. Team:")
    with lf.track() as tracker:
        lm.score(request, [" billing", " sales"])
        lm.score(request, [" billing", " sales"])
    fresh, cached = (call.response for call in tracker.calls)
    assert fresh is not None and cached is not None
    assert fresh.usage.prompt_tokens == 4 + 2  # the fake counts words: prompt + continuations
    assert (cached.cache_hit, cached.usage) == (True, fresh.usage)
    assert tracker.prompt_tokens == 6  # cache hits cost no tokens


def test_lm_score_counts_against_budgets() -> None:
    lm = ScoringLM(SCORES)
    request = lm.request(prompt="Team:")
    with enforce(lf.Budget(max_lm_calls=1)):
        lm.score(request, [" sales"])
        with pytest.raises(BudgetExceededError):
            lm.score(request, [" billing"])


def test_lm_score_retries_transient_errors_and_reports_failures() -> None:
    failures = [lf.errors.RateLimitError("slow down", model="test/scoring")]

    def scores(request: LMRequest, continuations: tuple[str, ...]) -> list[float]:
        if failures:
            raise failures.pop()
        return [-1.0] * len(continuations)

    lm = ScoringLM(scores, retry=RetryPolicy(max_attempts=2, base_delay=0.0, jitter=0.0))
    request = lm.request(prompt="Team:")
    with lf.track() as tracker:
        assert lm.score(request, [" a", " b"]) == [-1.0, -1.0]
    assert [call.retries for call in tracker.calls] == [1]
    failures.append(lf.errors.ProviderError("bad request", model="test/scoring"))
    with lf.track() as tracker, pytest.raises(lf.errors.ProviderError):
        lm.score(request, [" a"])
    assert [call.error for call in tracker.calls] == ["ProviderError"]


def test_lm_score_refuses_an_lm_that_cannot_score() -> None:
    lm = ScriptedLM(["x"])
    with pytest.raises(UsageError, match="cannot score"):
        lm.score(lm.request(prompt="p"), [" a"])


# -- calibration ---------------------------------------------------------------------------


def test_contextual_calibration_divides_out_the_content_free_distribution() -> None:
    # Content-free inputs give p_cf = (0.5, 0.25, 0.25); a bias of -log p_cf undoes it.
    bias = lf.calibration.contextual_bias([[0.6, 0.2, 0.2], [0.4, 0.3, 0.3]])
    assert bias == pytest.approx([-math.log(0.5), -math.log(0.25), -math.log(0.25)])
    calibrated = lf.scoring.normalise(
        lf.calibration.Calibration(TEAMS, tuple(bias)).apply(
            [math.log(p) for p in (0.5, 0.25, 0.25)]
        )
    )
    assert calibrated == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_calibrate_measures_the_prompt_bias_and_applies_it() -> None:
    def scores(request: LMRequest, continuations: tuple[str, ...]) -> list[float]:
        # The prompt favours "billing" by 2 nats whatever the ticket; the content
        # carries a 1-nat preference for the right team.
        prompt = request.as_text()
        right = "sales" if "price" in prompt else "support" if "crash" in prompt else "-"
        return [
            (2.0 if "billing" in c else 0.0) + (1.0 if right in c else 0.0) for c in continuations
        ]

    lm = ScoringLM(scores)
    program = lf.Predict(Route, lm=lm)
    assert program(ticket="what is the price?").team == "billing"  # biased
    lf.calibration.calibrate(program, method="contextual")
    assert program.calibration is not None and program.calibration.method == "contextual"
    assert program(ticket="what is the price?").team == "sales"
    assert program(ticket="it crashes").team == "support"
    lf.calibration.set_calibration(program, False)
    assert program(ticket="what is the price?").team == "billing"


def test_fitted_bias_learns_a_dev_split_label_bias() -> None:
    # Raw scores prefer label 0 by 1.5 nats; the gold label gets +1: argmax is wrong on
    # every example whose gold label is not 0 until the bias is fitted.
    rows = [[1.5 + (g == 0), float(g == 1), float(g == 2)] for g in (0, 1, 2) * 10]
    gold = [0, 1, 2] * 10
    fitted = lf.calibration.fit_bias(rows, gold, [0.0, 0.0, 0.0])
    right = sum(
        max(range(3), key=lambda i: row[i] + fitted[i]) == g
        for row, g in zip(rows, gold, strict=True)
    )
    assert right == 30
    assert fitted[0] < fitted[1] and fitted[0] < fitted[2]


def test_calibrate_with_a_dev_split_keeps_the_fitted_bias_when_it_does_better() -> None:
    def scores(request: LMRequest, continuations: tuple[str, ...]) -> list[float]:
        prompt = request.as_text().rsplit("Ticket:", 1)[-1]
        right = "sales" if "price" in prompt else "support" if "crash" in prompt else "billing"
        # Content-free prompts look neutral, yet real tickets lean to "support" by 2 nats:
        # contextual calibration cannot see that bias; a dev split can.
        lean = 0.0 if "N/A" in prompt or "MASK" in prompt or prompt.strip() == "" else 2.0
        return [
            (lean if "support" in c else 0.0) + (1.5 if right in c else 0.0) for c in continuations
        ]

    dev = [
        lf.Example(ticket=t, team=team).with_inputs("ticket")
        for t, team in [("price?", "sales"), ("refund", "billing"), ("crash", "support")] * 3
    ]
    program = lf.Predict(Route, lm=ScoringLM(scores))
    assert program(ticket="price?").team == "support"
    lf.calibration.calibrate(program, dev)
    assert program.calibration is not None and program.calibration.method == "fitted"
    assert [program(ticket=e.ticket).team for e in dev[:3]] == ["sales", "billing", "support"]


def test_a_new_prompt_drops_the_calibration_measured_for_the_old_one() -> None:
    program = lf.Predict(Route, lm=ScoringLM(SCORES))
    lf.calibration.calibrate(program)
    assert program.calibration is not None
    program.demos = [{"ticket": "refund", "team": "billing"}]
    assert program.calibration is None
    lf.calibration.calibrate(program)
    program.signature = program.signature.with_instructions("Route it.")
    assert program.calibration is None


def test_calibrate_leaves_predictors_that_generate_alone() -> None:
    lm = ScriptedLM([])
    program = lf.Predict(Route, lm=lm)
    assert lf.calibration.calibrate(program) is program
    assert program.calibration is None and lm.calls == []


def test_fitted_calibration_without_dev_is_refused() -> None:
    program = lf.Predict(Route, lm=ScoringLM(SCORES))
    with pytest.raises(UsageError, match="needs a dev split"):
        lf.calibration.calibrate(program, method="fitted")


# -- artifacts -----------------------------------------------------------------------------


def test_decode_and_calibration_round_trip_through_the_artifact_state(tmp_path: Any) -> None:
    program = lf.Predict(Route, lm=ScoringLM(SCORES), decode="score")
    program.calibration = lf.calibration.Calibration(TEAMS, (0.0, -5.0, 0.0), "fitted")
    path = tmp_path / "router.json"
    program.save(path)
    state = json.loads(path.read_text())
    assert "calibration" in json.dumps(state) and '"decode": "score"' in json.dumps(state)
    loaded = lf.load(path, program=lf.Predict(Route))
    assert isinstance(loaded, lf.Predict)
    loaded.lm = ScoringLM(SCORES)
    assert loaded.decode == "score" and loaded.calibration == program.calibration
    assert loaded(ticket="x").team == "support"  # sales is biased away by the calibration


def test_programs_that_never_scored_keep_their_artifact_state() -> None:
    state = lf.Predict(Route).dump_state()
    assert "decode" not in state and "calibration" not in state


@pytest.mark.parametrize(
    "change",
    [
        {"decode": "beam"},
        {"calibration": {"labels": ["a"], "bias": [1.0, 2.0]}},
        {"calibration": {"labels": ["a"], "bias": ["x"]}},
        {"calibration": {"labels": ["a"], "bias": [1.0], "method": "magic"}},
    ],
)
def test_a_malformed_scoring_state_is_an_artifact_error(change: dict[str, Any]) -> None:
    state = {**lf.Predict(Route).dump_state(), **change}
    with pytest.raises(ArtifactError, match="invalid predictor state"):
        lf.Predict(Route).load_state(state)


# -- OpenAI-compatible servers: echoed prompt log-probabilities ----------------------------


def echo_body(prompt: str, continuations: list[str], values: list[list[float]]) -> dict[str, Any]:
    """An echoed /completions answer: the prompt as 2 tokens, each continuation's tokens,
    then one generated token."""
    choices = []
    for i, (text, logprobs) in enumerate(zip(continuations, values, strict=True)):
        half = len(prompt) // 2
        pieces = [prompt[:half], prompt[half:]]
        pieces += [text[j : j + 3] for j in range(0, len(text), 3)] + ["\n"]
        lps: list[float | None] = [None, -0.7, *logprobs, -0.1]
        offsets, at = [], 0
        for piece in pieces:
            offsets.append(at)
            at += len(piece)
        choices.append(
            {
                "index": i,
                "text": prompt + text + "\n",
                "logprobs": {"tokens": pieces, "token_logprobs": lps, "text_offset": offsets},
            }
        )
    return {"choices": list(reversed(choices))}


def test_parse_scores_sums_the_continuation_tokens_only() -> None:
    body = echo_body("Team:", [" sales", " billing"], [[-0.2, -0.3], [-1.0, -1.0, -0.5]])
    assert parse_scores(body, "Team:", [" sales", " billing"]) == pytest.approx([-0.5, -2.5])
    payload = scoring_payload({"prompt": "Team:", "stop": ["\n"], "n": 2}, [" a", " b"])
    assert payload["prompt"] == ["Team: a", "Team: b"] and payload["echo"] is True
    assert "stop" not in payload and "n" not in payload and payload["max_tokens"] == 1


@pytest.mark.parametrize("use_async", [False, True])
def test_text_completion_servers_score_labels_in_one_echoed_request(use_async: bool) -> None:
    server = FakeServer()
    try:

        def reply(request: dict[str, Any]) -> Any:
            body = request["body"]
            prompt = body["prompt"][0][: -len(" billing")]
            conts = [p[len(prompt) :] for p in body["prompt"]]
            values = [[-0.1 if "sales" in c else -2.0] * len(c[::3]) for c in conts]
            return 200, {}, echo_body(prompt, conts, values)

        server.reply = reply
        lm = lf.LM("hosted_vllm/m", api_base=server.base, model_type="text", cache=False)
        program = lf.Predict(Route, lm=lm)
        if use_async:
            prediction = asyncio.run(program.acall(ticket="price?"))
        else:
            prediction = program(ticket="price?")
        assert prediction.team == "sales" and prediction.confidence > 0.9
        (sent,) = server.requests
        assert sent["path"] == "/v1/completions" and sent["body"]["echo"] is True
        assert len(sent["body"]["prompt"]) == 3
    finally:
        server.close()


@pytest.mark.parametrize(
    "refusal",
    [(400, {"error": "echo is not supported"}), (500, {"error": "no logprobs"}), (200, {"x": 1})],
)
def test_a_server_that_refuses_to_score_is_asked_to_generate_from_then_on(
    refusal: tuple[int, dict[str, Any]],
) -> None:
    server = FakeServer()
    try:
        server.reply = lambda request: (
            (refusal[0], {}, refusal[1])
            if request["body"].get("echo")
            else (200, {}, {"choices": [{"index": 0, "text": " support"}]})
        )
        lm = lf.LM("hosted_vllm/m", api_base=server.base, model_type="text", cache=False)
        program = lf.Predict(Route, lm=lm)
        first, second = program(ticket="x"), program(ticket="y")
        assert first.team == second.team == "support" and first.confidence is None
        echoed = [r for r in server.requests if r["body"].get("echo")]
        assert len(echoed) == 1 and len(server.requests) == 3
        with pytest.raises(UsageError, match="cannot score"):
            lf.Predict(Route, lm=lm, decode="score")(ticket="z")
    finally:
        server.close()


def test_chat_models_on_http_servers_generate() -> None:
    lm = lf.LM("hosted_vllm/m", api_base="http://127.0.0.1:9/v1", cache=False)
    assert lm.model_type == "chat" and not lm.can_score(lm.request(prompt="x"))
    text = lf.LM("openai/gpt-x", model_type="text", cache=False, api_key="k")
    assert not text.can_score(text.request(prompt="x"))  # OpenAI's own endpoint: no echo


def test_vllm_bundle_backend_scores_through_completions() -> None:
    from lmforge.targets.backends import VLLMBackend

    server = FakeServer()
    try:
        body = echo_body("Team:", [" a", " b"], [[-0.1], [-3.0]])
        body["usage"] = {"prompt_tokens": 8, "completion_tokens": 2}
        server.reply = lambda request: (200, {}, body)
        backend = VLLMBackend(server.base.removesuffix("/v1"), "served")
        request = LMRequest(model="m", prompt="Team:")
        assert isinstance(backend, ScoringBackend) and backend.can_score(request)
        answer = backend.score(request, [" a", " b"])
        assert answer.values == pytest.approx((-0.1, -3.0))
        assert answer.usage == Usage(8, 2)  # the server's token counts, as reported
        assert server.requests[0]["body"]["model"] == "served"
    finally:
        server.close()
