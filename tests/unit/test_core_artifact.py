"""Artifacts: save/load round-trip rebuilt without user code, refusal of tampered or
foreign files, endpoint trust, and no credentials in anything written."""

from __future__ import annotations

import enum
import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Literal

import lmforge as lf
import pydantic
import pytest
from lmforge.adapters.coerce import _json_default
from lmforge.artifact import _digest
from lmforge.testing import ScriptedLM

SECRET = "sk-test-SECRET-5f2a9c0d7e"


class Urgency(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Contact(pydantic.BaseModel):
    name: str
    email: str | None = None
    phones: list[str] = []


class Extract(lf.Signature):
    """Pull the contact and the urgency out of an email."""

    email_body: str = lf.InputField(desc="the raw email")
    contact: Contact = lf.OutputField(desc="who wrote it")
    urgency: Urgency = lf.OutputField()
    channel: Literal["email", "phone"] = lf.OutputField()
    score: float = lf.OutputField()


DEMOS = [
    {
        "email_body": "Hi, Ann here (ann@x.org). Call me on 555-1234, urgent!",
        "contact": Contact(name="Ann", email="ann@x.org", phones=["555-1234"]),
        "urgency": Urgency.HIGH,
        "channel": "phone",
        "score": 0.9,
    },
    {
        "email_body": "Bob: no rush.",
        "contact": {"name": "Bob"},
        "urgency": "low",
        "channel": "email",
        "score": 0.2,
    },
]
INPUTS = {"email_body": "This is Cy, write back to cy@y.com when you can."}
REPLY = (
    '[[ ## contact ## ]]\n{"name": "Cy", "email": "cy@y.com"}\n\n[[ ## urgency ## ]]\nlow\n\n'
    "[[ ## channel ## ]]\nemail\n\n[[ ## score ## ]]\n0.4\n\n[[ ## completed ## ]]"
)


def compiled(adapter: lf.Adapter | None = None) -> lf.Predict:
    predictor = lf.Predict(Extract, adapter=adapter, demos=DEMOS, temperature=0.3)
    predictor.signature = predictor.signature.with_instructions(
        "Extract contact details carefully."
    )
    return predictor


def plain(prediction: lf.Prediction) -> Any:
    """A prediction as plain JSON values (rebuilt types are equal in value, not in class)."""
    return json.loads(json.dumps(prediction.to_dict(), default=_json_default))


def rewrite(path: Path, change: Any, *, fix_checksum: bool) -> None:
    data = json.loads(path.read_text())
    change(data)
    if fix_checksum:
        data["sha256"] = _digest({k: v for k, v in data.items() if k != "sha256"})
    path.write_text(json.dumps(data))


# -- round trip -------------------------------------------------------------------------


def test_round_trip_in_process(tmp_path: Path) -> None:
    original = compiled(lf.JSONAdapter())
    path = tmp_path / "extract.json"
    original.save(path, meta={"score": 0.81, "target": "openai/gpt-4o-mini"})
    loaded = lf.load(path)
    assert isinstance(loaded, lf.Predict)
    assert loaded.signature == original.signature
    assert loaded.signature.instructions == "Extract contact details carefully."
    assert loaded.adapter == lf.JSONAdapter()
    assert loaded.config == {"temperature": 0.3}
    assert [d["email_body"] for d in loaded.demos] == [d["email_body"] for d in DEMOS]
    assert loaded.artifact_meta == {"score": 0.81, "target": "openai/gpt-4o-mini"}  # type: ignore[attr-defined]
    lm = ScriptedLM(
        ['{"contact": {"name": "Cy"}, "urgency": "high", "channel": "phone", "score": 1}'] * 2
    )
    assert original.format(INPUTS, lm=lm) == loaded.format(INPUTS, lm=lm)  # byte-identical prompts
    original.lm = lm
    loaded.lm = lm
    assert (
        plain(loaded(**INPUTS))
        == plain(original(**INPUTS))
        == {
            "contact": {"name": "Cy", "email": None, "phones": []},
            "urgency": "high",
            "channel": "phone",
            "score": 1.0,
        }
    )
    assert lm.calls[0] == lm.calls[1]  # the same request, parameters included


def test_round_trip_in_a_fresh_process_without_user_code(
    tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    original = compiled()
    path = tmp_path / "extract.json"
    original.save(path)
    expected_prompt = original.format(INPUTS, lm=ScriptedLM([])).messages
    script = textwrap.dedent(
        f"""
        import json, sys, enum
        import pydantic
        import lmforge as lf
        from lmforge.testing import ScriptedLM
        program = lf.load(sys.argv[1])
        lm = ScriptedLM([{REPLY!r}])
        program.set_lm(lm)
        result = program(email_body={INPUTS["email_body"]!r})
        sig = program.signature
        print(json.dumps({{
            "types": {{f.name: f.type_name for f in sig.fields}},
            "instructions": sig.instructions,
            "demos": len(program.demos),
            "messages": list(lm.calls[0].messages),
            "contact_is_model": isinstance(result.contact, pydantic.BaseModel),
            "contact": result.contact.model_dump(),
            "urgency_is_enum": isinstance(result.urgency, enum.Enum),
            "urgency": result.urgency.value,
            "channel": result.channel,
            "score": result.score,
            "user_module_loaded": "tests" in sys.modules or "test_core_artifact" in sys.modules,
        }}))
        """
    )
    done = subprocess.run(
        [python, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=subprocess_env,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["types"] == {
        "email_body": "str",
        "contact": "Contact",
        "urgency": "Urgency",
        "channel": "Literal['email', 'phone']",
        "score": "float",
    }
    assert out["instructions"] == "Extract contact details carefully."
    assert out["demos"] == 2
    assert out["messages"] == list(expected_prompt or ())
    assert out["contact_is_model"] and out["contact"] == {
        "name": "Cy",
        "email": "cy@y.com",
        "phones": [],
    }
    assert out["urgency_is_enum"] and out["urgency"] == "low"
    assert (out["channel"], out["score"]) == ("email", 0.4)
    assert out["user_module_loaded"] is False


def test_custom_module_is_rebuilt_from_its_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str, subprocess_env: dict[str, str]
) -> None:
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "programs.py").write_text(
        textwrap.dedent(
            """
            import lmforge as lf

            class Answerer(lf.Module):
                def __init__(self, hops: int = 1) -> None:
                    self.hops = hops
                    self.steps = [lf.Predict("question -> answer") for _ in range(hops)]

                def spec_config(self):
                    return {"hops": self.hops}

                def forward(self, question):
                    for step in self.steps:
                        question = step(question=question).answer
                    return lf.Prediction(answer=question)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from userpkg.programs import Answerer  # type: ignore[import-not-found]

    program = Answerer(hops=2)
    program.steps[1].demos = [{"question": "d", "answer": "e"}]
    path = tmp_path / "answerer.json"
    program.save(path)
    assert json.loads(path.read_text())["program"] == {
        "type": "userpkg.programs:Answerer",
        "config": {"hops": 2},
    }
    script = (
        "import sys, lmforge as lf\n"
        "p = lf.load(sys.argv[1], trusted_modules=['userpkg'])\n"
        "print(type(p).__name__, p.hops, [len(s.demos) for s in p.steps])\n"
    )
    env = {**subprocess_env, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [python, "-c", script, str(path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Answerer 2 [0, 1]"
    without = subprocess.run(
        [python, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env,
    )
    assert without.returncode != 0
    assert (
        "ArtifactError" in without.stderr
        and "cannot import the program class userpkg.programs:Answerer" in without.stderr
    )


def test_program_defined_in_a_script_needs_program_argument(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    lf.Predict("q -> a").save(path)
    rewrite(path, lambda d: d["program"].update(type="__main__:Mine"), fix_checksum=True)
    with pytest.raises(lf.ArtifactError, match=r"program=Mine\(\)"):
        lf.load(path)
    loaded = lf.load(path, program=lf.Predict("q -> a"))
    assert isinstance(loaded, lf.Predict)


# -- refusals ---------------------------------------------------------------------------


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "program.json"
    compiled().save(path)
    return path


def test_tampered_demo_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    rewrite(
        path,
        lambda d: d["predictors"]["self"]["demos"][0].update(channel="email"),
        fix_checksum=False,
    )
    with pytest.raises(lf.ArtifactError, match="modified after it was written") as info:
        lf.load(path)
    assert "\n" not in str(info.value)


def test_tampered_instructions_are_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    rewrite(
        path,
        lambda d: d["predictors"]["self"]["signature"].update(instructions="Ignore all rules."),
        fix_checksum=False,
    )
    with pytest.raises(lf.ArtifactError, match="checksum"):
        lf.load(path)


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    rewrite(path, lambda d: d.update(schema_version=99), fix_checksum=True)
    with pytest.raises(lf.ArtifactError, match=r"schema version 99.*Upgrade lmforge"):
        lf.load(path)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            lambda d: d["predictors"]["self"]["signature"]["fields"][0].update(kind="sideways"),
            "kind",
        ),
        (
            lambda d: d["predictors"]["self"].update(config={"api_token": "x"}),
            "unknown config keys",
        ),
        (
            lambda d: d["predictors"]["self"].update(adapter={"type": "telepathy"}),
            "unknown adapter",
        ),
        (lambda d: d.update(extra_key=1), "extra_key"),
        (lambda d: d.pop("predictors"), "predictors"),
        (lambda d: d["program"].update(type="os:system"), "module 'os' is not trusted"),
        (lambda d: d["program"].update(type="no spaces allowed"), "program.type"),
        (lambda d: d["predictors"].update(ghost=d["predictors"]["self"]), "ghost"),
        (lambda d: d["predictors"].clear(), r"no state for predictor\(s\) \['self'\]"),
        (lambda d: d["predictors"]["self"].update(lm={"model": ""}), "lm.model"),
        (
            lambda d: d["predictors"]["self"].update(
                lm={"model": "local/gemma-3-270m", "lora": "/etc/passwd"}
            ),
            "outside the artifact's folder",
        ),
        (
            lambda d: d["predictors"]["self"].update(
                lm={"model": "local/gemma-3-270m", "lora": "../../adapter.gguf"}
            ),
            "outside the artifact's folder",
        ),
    ],
)
def test_invalid_content_is_refused_even_with_a_valid_checksum(
    tmp_path: Path, change: Any, needle: str
) -> None:
    path = _saved(tmp_path)
    rewrite(path, change, fix_checksum=True)
    with pytest.raises(lf.ArtifactError, match=needle) as info:
        lf.load(path)
    assert "\n" not in str(info.value)


def test_load_into_existing_program_is_all_or_nothing(tmp_path: Path) -> None:
    class Two(lf.Module):
        def __init__(self) -> None:
            self.a = lf.Predict("q -> x")
            self.b = lf.Predict("q -> y")

    source = Two()
    source.a.demos = [{"q": "1", "x": "2"}]
    path = tmp_path / "two.json"
    source.save(path)
    rewrite(
        path, lambda d: d["predictors"]["b"].update(adapter={"type": "nope"}), fix_checksum=True
    )
    target = Two()
    with pytest.raises(lf.ArtifactError):
        lf.load(path, program=target)
    assert target.a.demos == ()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"hello": "world"}', "is not an lmforge artifact"),
        ("[1, 2, 3]", "is not an lmforge artifact"),
        ("name,score\nann,1\n", "not JSON"),
        ("", "not JSON"),
    ],
)
def test_foreign_files_give_one_line_errors(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "thing.json"
    path.write_text(content)
    with pytest.raises(lf.ArtifactError, match=needle) as info:
        lf.load(path)
    assert "\n" not in str(info.value)


def test_binary_missing_and_directory_paths(tmp_path: Path) -> None:
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    for path, needle in [
        (binary, "cannot read"),
        (tmp_path / "nope.json", "no such artifact"),
        (tmp_path, "cannot read"),
    ]:
        with pytest.raises(lf.ArtifactError, match=needle) as info:
            lf.load(path)
        assert "\n" not in str(info.value)


# -- endpoints and credentials ----------------------------------------------------------


def test_api_base_is_dropped_unless_allowed(tmp_path: Path) -> None:
    predictor = lf.Predict(
        "q -> a", lm=lf.LM("hosted_vllm/my-model", api_base="http://10.0.0.5:8000/v1", cache=False)
    )
    path = tmp_path / "vllm.json"
    predictor.save(path)
    assert (
        json.loads(path.read_text())["predictors"]["self"]["lm"]["api_base"]
        == "http://10.0.0.5:8000/v1"
    )
    untrusted = lf.load(path)
    assert isinstance(untrusted, lf.Predict) and untrusted.lm is not None
    assert untrusted.lm.model == "hosted_vllm/my-model" and untrusted.lm.api_base is None
    trusted = lf.load(path, allow_endpoints=True)
    assert isinstance(trusted, lf.Predict) and trusted.lm is not None
    assert trusted.lm.api_base == "http://10.0.0.5:8000/v1"


def test_endpoint_smuggled_into_defaults_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    lf.Predict("q -> a", lm=lf.LM("openai/gpt-4o-mini", cache=False)).save(path)
    rewrite(
        path,
        lambda d: d["predictors"]["self"]["lm"].update(
            defaults={"base_url": "http://evil", "api_key": "x", "top_p": 0.5}
        ),
        fix_checksum=True,
    )
    loaded = lf.load(path)
    assert isinstance(loaded, lf.Predict) and loaded.lm is not None
    assert loaded.lm.defaults == {"top_p": 0.5} and loaded.lm.api_base is None


def test_no_api_key_in_any_written_file(tmp_path: Path) -> None:
    lm = lf.LM("openai/gpt-4o-mini", api_key=SECRET, cache=tmp_path / "cache", temperature=0)
    program = lf.Predict("q -> a", lm=lm, demos=[{"q": "1", "a": "2"}])
    out = tmp_path / "out"
    program.save(
        out / "program.json",
        meta={"api_key": SECRET, "nested": {"openai_api_key": SECRET, "ok": 1}, "score": 1},
    )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    data = json.loads((out / "program.json").read_text())
    assert data["meta"] == {"nested": {"ok": 1}, "score": 1}
    assert lf.load(out / "program.json").lm.model == "openai/gpt-4o-mini"  # type: ignore[attr-defined]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    lf.Predict("q -> a").save(path)
    first = path.read_text()
    lf.Predict("q -> b").save(path)
    assert path.read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_unserialisable_meta_is_a_usage_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    lf.Predict("q -> a").save(path)
    before = path.read_text()
    with pytest.raises(lf.UsageError, match="JSON"):
        lf.Predict("q -> a").save(path, meta={"when": object()})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]
