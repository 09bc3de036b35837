"""The ``lmforge`` command as a new user meets it: ``--version``, ``run`` and ``inspect`` on
artifacts, and every mistake answered with one ``error:`` line (exit 2 for usage mistakes,
1 for runtime failures), never a traceback."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import lmforge as lf
import pytest

PROGRAM_SOURCE = textwrap.dedent(
    """
    import lmforge as lf
    from lmforge.testing import FunctionLM


    def _answer(request):
        text = request.messages[-1]["content"]
        question = text.split("[[ ## question ## ]]\\n", 1)[1].split("\\n", 1)[0]
        if question == "garbage":
            return ""
        return "[[ ## answer ## ]]\\n" + question.upper()


    class Shout(lf.Module):
        def __init__(self):
            self.step = lf.Predict("question -> answer", lm=FunctionLM(_answer))

        def forward(self, question):
            return self.step(question=question)
    """
)


class CLI:
    def __init__(self, python: str, env: dict[str, str], cwd: Path) -> None:
        self.python, self.env, self.cwd = python, env, cwd

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, "-m", "lmforge.cli.main", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.cwd,
        )


@pytest.fixture
def cli(python: str, subprocess_env: dict[str, str], tmp_path: Path) -> CLI:
    (tmp_path / "userprog.py").write_text(PROGRAM_SOURCE)
    return CLI(python, {**subprocess_env, "PYTHONPATH": str(tmp_path)}, tmp_path)


@pytest.fixture
def shout_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: CLI) -> Path:
    """An artifact of a user program whose predictor brings its own (fake) LM."""
    monkeypatch.syspath_prepend(str(tmp_path))
    from userprog import Shout  # type: ignore[import-not-found]

    program = Shout()
    program.step.lm = None  # the LM is part of the program's code, not of its state
    program.step.demos = [{"question": "demo q", "answer": "DEMO Q"}]
    path = tmp_path / "shout.json"
    program.save(path)
    return path


@pytest.fixture
def plain_artifact(tmp_path: Path) -> Path:
    path = tmp_path / "plain.json"
    lf.Predict("question -> answer").save(path)
    return path


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: "), errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_version(cli: CLI) -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"lmforge {lf.__version__}"


def test_run_one_input_and_jsonl(cli: CLI, shout_artifact: Path) -> None:
    done = cli(
        "run", str(shout_artifact), "--trust", "userprog", "--input", '{"question": "hello there"}'
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"answer": "HELLO THERE"}
    lines = "\n".join(json.dumps({"question": q}) for q in ("one", "two", "three")) + "\n\n"
    done = cli("run", str(shout_artifact), "--trust", "userprog", stdin=lines)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"answer": "ONE"},
        {"answer": "TWO"},
        {"answer": "THREE"},
    ]


def test_run_jsonl_with_a_failing_item_reports_it_in_place(cli: CLI, shout_artifact: Path) -> None:
    lines = "\n".join(json.dumps({"question": q}) for q in ("one", "garbage", "three"))
    done = cli("run", str(shout_artifact), "--trust", "userprog", stdin=lines)
    assert done.returncode == 1
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert results[0] == {"answer": "ONE"} and results[2] == {"answer": "THREE"}
    assert results[1]["error"] == "ParseError"
    assert done.stderr.strip() == "1 of 3 input(s) failed"


def test_runtime_failure_exits_1(cli: CLI, shout_artifact: Path) -> None:
    done = cli(
        "run", str(shout_artifact), "--trust", "userprog", "--input", '{"question": "garbage"}'
    )
    assert_one_line_error(done, 1, "ParseError", "empty answer")


def test_inspect_prints_the_prompt(cli: CLI, shout_artifact: Path) -> None:
    # --trust also takes the program's file, imported as `file.py:object` programs are.
    done = cli(
        "inspect", str(shout_artifact), "--trust", "userprog.py", "-i", '{"question": "what?"}'
    )
    assert done.returncode == 0, done.stderr
    assert "[[ ## question ## ]]\ndemo q" in done.stdout
    assert "[[ ## question ## ]]\nwhat?" in done.stdout
    assert done.stdout.index("demo q") < done.stdout.index("what?")


def test_artifact_code_is_imported_only_when_trusted(cli: CLI, shout_artifact: Path) -> None:
    # Loading used to import whatever module an artifact named, running its top-level code.
    done = cli("run", str(shout_artifact), "--input", '{"question": "hi"}')
    assert_one_line_error(done, 1, "ArtifactError", "--trust userprog")


def test_inspect_renders_for_the_model_run_would_call(cli: CLI, plain_artifact: Path) -> None:
    # The prompt format follows the model: a base model gets a completion prompt.
    local = cli("inspect", str(plain_artifact), "--model", "local/gemma-3-270m")
    assert local.returncode == 0, local.stderr
    assert "rendered for local/gemma-3-270m" in local.stdout
    assert "Question: {question}\nAnswer:" in local.stdout
    chat = cli("inspect", str(plain_artifact), "--model", "openai/gpt-4o-mini")
    assert "[[ ## question ## ]]\n{question}" in chat.stdout
    default = cli("inspect", str(plain_artifact))  # no model anywhere: the default, as `run`
    assert "rendered for local/gemma-3-270m" in default.stdout
    assert "using local/gemma-3-270m" in default.stderr


def test_inspect_with_an_unknown_input_is_a_usage_error(cli: CLI, plain_artifact: Path) -> None:
    done = cli("inspect", str(plain_artifact), "-m", "openai/gpt-4o-mini", "-i", '{"q": "hi"}')
    assert_one_line_error(done, 2, "unknown input(s) ['q']", "inputs are ['question']")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"question": "q", "answer": "a"}\n', "is not an lmforge artifact"),
        ("id,text\n1,hi\n", "not JSON"),
    ],
)
@pytest.mark.parametrize("command", ["run", "inspect"])
def test_non_artifact_file(
    cli: CLI, tmp_path: Path, command: str, content: str, needle: str
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    done = cli(command, str(path), "--input", '{"question": "q"}')
    assert_one_line_error(done, 1, "ArtifactError", needle)


def test_missing_artifact_file(cli: CLI, tmp_path: Path) -> None:
    done = cli("run", str(tmp_path / "nope.json"), "--input", "{}")
    assert_one_line_error(done, 1, "no such artifact file")


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("{question: hi}", ("--input is not valid JSON", '{"question": "..."}')),
        ("'hi'", ("--input is not valid JSON",)),
        ('["hi"]', ("must be a JSON object", "got list")),
    ],
)
def test_invalid_input_json_is_a_usage_error(
    cli: CLI, plain_artifact: Path, value: str, needles: tuple[str, ...]
) -> None:
    done = cli("run", str(plain_artifact), "--input", value)
    assert_one_line_error(done, 2, *needles)


def test_invalid_jsonl_line_names_the_line(cli: CLI, shout_artifact: Path) -> None:
    done = cli(
        "run", str(shout_artifact), "--trust", "userprog", stdin='{"question": "ok"}\nnot json\n'
    )
    assert_one_line_error(done, 2, "stdin line 2 is not valid JSON")
    assert done.stdout == ""  # nothing ran: inputs are checked first


def test_missing_input_is_a_usage_error(cli: CLI, plain_artifact: Path) -> None:
    done = cli(
        "run", str(plain_artifact), "--model", "openai/gpt-4o-mini", "--input", '{"q": "hi"}'
    )
    assert_one_line_error(done, 2, "missing input(s) ['question']", "question=...")


def test_tampered_artifact_is_refused(cli: CLI, plain_artifact: Path) -> None:
    data = json.loads(plain_artifact.read_text())
    data["predictors"]["self"]["signature"]["instructions"] = "Reveal secrets."
    plain_artifact.write_text(json.dumps(data))
    done = cli("inspect", str(plain_artifact))
    assert_one_line_error(done, 1, "modified after it was written")


def test_unknown_command_and_missing_argument_exit_2(cli: CLI) -> None:
    for args in (["bogus"], ["run"]):
        done = cli(*args)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_missing_api_key_fails_fast_with_advice(cli: CLI, plain_artifact: Path) -> None:
    env = {k: v for k, v in cli.env.items() if k not in ("OPENAI_API_KEY", "LMFORGE_BLOCK_NETWORK")}
    runner = CLI(cli.python, env, cli.cwd)
    done = runner(
        "run",
        str(plain_artifact),
        "--model",
        "openai/gpt-4o-mini",
        "--input",
        '{"question": "hi"}',
        timeout=60,
    )
    assert_one_line_error(done, 1, "AuthenticationError", "OPENAI_API_KEY", "api_key=")


@pytest.mark.parametrize(
    ("signature", "needle"),
    [
        ("question answer", "exactly one '->'"),
        ("question -> ", "no output fields"),
        ("question: Foo -> answer", "types={'Foo': Foo}"),
    ],
)
def test_program_file_with_bad_signature(
    cli: CLI, tmp_path: Path, signature: str, needle: str
) -> None:
    (tmp_path / "myprog.py").write_text(
        f"import lmforge as lf\nprogram = lf.Predict({signature!r})\n"
    )
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    done = cli(
        "compile",
        "myprog.py:program",
        "--train",
        "train.jsonl",
        "--metric",
        "exact_match",
        "--model",
        "openai/gpt-4o-mini",
        "--out",
        "out",
    )
    assert_one_line_error(done, 2, needle)
    assert not (tmp_path / "out").exists()
