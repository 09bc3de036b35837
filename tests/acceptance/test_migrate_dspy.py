"""``lmforge migrate dspy``: programs saved by DSPy itself (in its own venv) become lmforge
artifacts whose instructions, demos and LM settings are the ones DSPy held.

DSPy is never a dependency of lmforge: the test runs it through ``$DSPY_PYTHON`` (made by
``benchmarks/_dspy_env.sh``; ``.ci/run`` builds it) and skips when no such venv exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest

DSPY_PYTHON = os.environ.get("DSPY_PYTHON", "/tmp/dspy-venv/bin/python")

pytestmark = [
    pytest.mark.dspy,
    pytest.mark.skipif(not Path(DSPY_PYTHON).exists(), reason="no DSPy venv ($DSPY_PYTHON)"),
]

SIGNATURES = textwrap.dedent(
    '''
    from typing import Literal

    import {fw} as fw


    class Route(fw.Signature):
        """Route a support ticket to the team that should handle it."""

        ticket: str = fw.InputField(desc="the customer's message")
        team: Literal["billing", "technical", "shipping"] = fw.OutputField()
    '''
)

# Builds three programs with DSPy, sets the state an optimizer would (instructions, demos,
# an LM with settings), saves each, and prints what the live DSPy objects hold.
DSPY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import dspy
    from dspy_sigs import Route

    out = sys.argv[1]
    lm = dspy.LM("openai/gpt-4o-mini", temperature=0.0, max_tokens=300, api_key="sk-never-saved")

    predict = dspy.Predict(Route)
    predict.lm = lm
    predict.signature = predict.signature.with_instructions("Route it. Billing owns refunds.")
    predict.demos = [
        dspy.Example(ticket="refund my order", team="billing").with_inputs("ticket"),
        dspy.Example(ticket="app crashes", team="technical", augmented=True),
    ]

    cot = dspy.ChainOfThought("question -> answer")
    cot.predict.demos = [
        dspy.Example(question="2+2?", reasoning="Two plus two.", answer="4", augmented=True)
    ]

    class TwoStep(dspy.Module):
        def __init__(self):
            self.summarize = dspy.Predict("text -> summary")
            self.classify = dspy.ChainOfThought("summary -> label")

        def forward(self, text):
            return self.classify(summary=self.summarize(text=text).summary)

    two = TwoStep()
    two.summarize.demos = [dspy.Example(text="a long story", summary="short")]
    two.classify.predict.signature = two.classify.predict.signature.with_instructions(
        "Label the summary."
    )

    held = {}
    for name, program in (("predict", predict), ("cot", cot), ("two", two)):
        program.save(f"{out}/{name}.json")
        held[name] = {
            pname: {
                "instructions": p.signature.instructions,
                "demos": [
                    {k: v for k, v in dict(d).items() if k != "augmented"} for d in p.demos
                ],
            }
            for pname, p in program.named_predictors()
        }
    print(json.dumps(held))
    """
)

LMFORGE_PROGRAM = textwrap.dedent(
    """
    import lmforge as lf
    from lmforge.modules import ChainOfThought


    class TwoStep(lf.Module):
        def __init__(self):
            self.summarize = lf.Predict("text -> summary")
            self.classify = ChainOfThought("summary -> label")

        def forward(self, text):
            return self.classify(summary=self.summarize(text=text).summary)
    """
)


@pytest.fixture(scope="module")
def dspy_saves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("dspy")
    (folder / "dspy_sigs.py").write_text(SIGNATURES.format(fw="dspy"))
    (folder / "save_programs.py").write_text(DSPY_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # DSPy imports litellm, which otherwise tries to download its price map.
    env.update(
        PYTHONPATH=str(folder),
        DSPY_CACHEDIR=str(folder / "cache"),
        HOME=str(folder),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    done = subprocess.run(
        [DSPY_PYTHON, "save_programs.py", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


def _migrate(python: str, env: dict[str, str], cwd: Path, *args: str) -> Path:
    out = cwd / "migrated.json"
    done = subprocess.run(
        [python, "-m", "lmforge.cli.main", "migrate", "dspy", *args, "--out", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    return out


def _held(program: lf.Module) -> dict[str, Any]:
    return {
        name: {"instructions": p.signature.instructions, "demos": [dict(d) for d in p.demos]}
        for name, p in program.named_predictors()
    }


@pytest.fixture
def user_env(tmp_path: Path, subprocess_env: dict[str, str]) -> dict[str, str]:
    (tmp_path / "user_sigs.py").write_text(SIGNATURES.format(fw="lmforge"))
    (tmp_path / "user_program.py").write_text(LMFORGE_PROGRAM)
    return {**subprocess_env, "PYTHONPATH": str(tmp_path)}


def test_a_saved_predict_keeps_instructions_demos_and_lm_settings(
    dspy_saves: tuple[Path, dict[str, Any]], python: str, user_env: dict[str, str], tmp_path: Path
) -> None:
    folder, held = dspy_saves
    out = _migrate(
        python, user_env, tmp_path, str(folder / "predict.json"), "-s", "user_sigs:Route"
    )
    program = lf.load(out)
    assert isinstance(program, lf.Predict)
    assert _held(program) == {"self": held["predict"]["self"]}
    assert program.signature.field("ticket").description == "the customer's message"
    assert program.lm is not None and program.lm.model == "openai/gpt-4o-mini"
    assert program.lm.defaults == {"temperature": 0.0, "max_tokens": 300}
    text = out.read_text()
    assert "sk-never-saved" not in text
    assert json.loads(text)["meta"]["migrated_from"]["framework"] == "dspy"


def test_a_saved_chain_of_thought_keeps_its_reasoning_demos(
    dspy_saves: tuple[Path, dict[str, Any]], python: str, user_env: dict[str, str], tmp_path: Path
) -> None:
    folder, held = dspy_saves
    out = _migrate(python, user_env, tmp_path, str(folder / "cot.json"), "-s", "question -> answer")
    program = lf.load(out)
    assert type(program).__name__ == "ChainOfThought"
    assert _held(program) == held["cot"]
    # DSPy's default instruction is kept word for word: the prompt says what DSPy's said
    assert program.predictors()[0].signature.instructions == held["cot"]["predict"]["instructions"]


def test_a_two_predictor_module_maps_by_predictor_name(
    dspy_saves: tuple[Path, dict[str, Any]], python: str, user_env: dict[str, str], tmp_path: Path
) -> None:
    folder, held = dspy_saves
    out = _migrate(
        python, user_env, tmp_path, str(folder / "two.json"), "--program", "user_program:TwoStep"
    )
    from lmforge.compat import dspy

    assert _held(dspy.load(folder / "two.json", program=_two_step(tmp_path))) == held["two"]
    document = json.loads(out.read_text())
    assert set(document["predictors"]) == {"summarize", "classify.predict"}


def test_mismatched_signatures_and_pickles_are_one_line_errors(
    dspy_saves: tuple[Path, dict[str, Any]], python: str, user_env: dict[str, str], tmp_path: Path
) -> None:
    folder, _ = dspy_saves
    cases = [
        ([str(folder / "two.json"), "-s", "a -> b"], "pass the lmforge program"),
        ([str(folder / "predict.json"), "-s", "a, b, c -> d"], "has 2 fields"),
        ([str(folder / "program.pkl"), "-s", "a -> b"], "never loads"),
        ([str(folder / "predict.json")], "pass --signature"),
    ]
    for args, expected in cases:
        done = subprocess.run(
            [python, "-m", "lmforge.cli.main", "migrate", "dspy", *args],
            cwd=tmp_path,
            env=user_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr


def _two_step(tmp_path: Path) -> lf.Module:
    namespace: dict[str, Any] = {}
    exec(compile(LMFORGE_PROGRAM, str(tmp_path / "user_program.py"), "exec"), namespace)
    return namespace["TwoStep"]()
