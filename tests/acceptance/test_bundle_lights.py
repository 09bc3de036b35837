"""Bundle settings for answer lights: ``answer_metadata`` and ``withhold`` travel from
``lmforge export`` through ``serving.json`` to the server's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import lmforge as lf
from lmforge.errors import ArtifactError, UsageError
from lmforge.targets import load_bundle
from lmforge.targets.config import ServerConfig
from lmforge.targets.export import ExportOptions, export_bundle
from lmforge.targets.serving_file import answer_options

KEY = "bundle-key-0123456789abcdef"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    program = lf.Predict(sig, lm=lf.LM("openai/gpt-4o-mini", cache=False))
    path = tmp_path / "triage@gpt.json"
    program.save(path, meta={"lights": {"green": 0.9, "red": 0.5, "target": 0.9, "floor": 0.5}})
    return path


def _export(artifact: Path, out: Path, **changes: Any) -> Path:
    options = ExportOptions(target="managed", **changes)
    return export_bundle(artifact, out, options).path


def test_export_writes_the_answer_settings_and_the_server_reads_them(
    artifact: Path, tmp_path: Path
) -> None:
    bundle = _export(artifact, tmp_path / "b", answer_metadata=True, withhold="red")
    serving = json.loads((bundle / "serving.json").read_text())
    assert serving["answers"] == {"metadata": True, "withhold": "red"}
    readme = (bundle / "README.md").read_text()
    assert "X-LMForge-Light" in readme and "red light are withheld" in readme
    program, config = load_bundle(bundle, ServerConfig(api_keys=(KEY,)))
    assert (config.answer_metadata, config.withhold) == (True, "red")
    assert program.artifact_meta["lights"]["green"] == 0.9  # type: ignore[attr-defined]


def test_by_default_answers_are_plain_and_the_operator_may_turn_settings_on(
    artifact: Path, tmp_path: Path
) -> None:
    bundle = _export(artifact, tmp_path / "b")
    assert json.loads((bundle / "serving.json").read_text())["answers"] == {
        "metadata": False,
        "withhold": None,
    }
    _, config = load_bundle(bundle, ServerConfig(api_keys=(KEY,)))
    assert (config.answer_metadata, config.withhold) == (False, None)
    _, chosen = load_bundle(bundle, ServerConfig(api_keys=(KEY,), withhold="yellow"))
    assert chosen.withhold == "yellow"


def test_bad_answer_settings_are_refused() -> None:
    with pytest.raises(UsageError, match="--withhold must be red or yellow"):
        ExportOptions(target="managed", withhold="green")
    assert answer_options({}) == {"answer_metadata": False, "withhold": None}
    for bad in ({"withhold": "blue"}, {"metadata": "yes"}, {"colour": 1}, []):
        with pytest.raises(ArtifactError, match=r"serving\.json"):
            answer_options({"answers": bad})
