"""Loading an artifact from someone else: what it names is imported only when trusted, and
the paths it records stay inside its folder. Artifacts here are edited and re-hashed, as
an attacker can recompute the checksum."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.artifact import _digest
from lmforge.modules import Chain, ReAct


def _rehash(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    body = {k: v for k, v in document.items() if k != "sha256"}
    path.write_text(json.dumps({**body, "sha256": _digest(body)}))


@pytest.fixture
def marker_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable module that writes a marker file when imported; (name, marker)."""
    name = f"lf_marker_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported.marker"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib
            import lmforge as lf

            pathlib.Path({str(marker)!r}).write_text("ran")

            class Program(lf.Predict):
                pass

            def tool(text: str) -> str:
                return text
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield name, marker
    sys.modules.pop(name, None)


def test_an_untrusted_program_class_is_refused_before_it_is_imported(
    tmp_path: Path, marker_module: tuple[str, Path]
) -> None:
    name, marker = marker_module
    path = tmp_path / "program.json"
    lf.Predict("q -> a").save(path)
    _rehash(path, lambda d: d["program"].update(type=f"{name}:Program"))

    with pytest.raises(lf.ArtifactError) as refused:
        lf.load(path)
    message = str(refused.value)
    assert "\n" not in message and f"trusted_modules=[{name!r}]" in message, message
    assert not marker.exists() and name not in sys.modules

    # A trusted name covers its submodules, but not a module that merely starts like it.
    with pytest.raises(lf.ArtifactError, match="not trusted"):
        lf.load(path, trusted_modules=[name[:-2]])
    assert not marker.exists()

    loaded = lf.load(path, trusted_modules=[name])
    assert type(loaded).__name__ == "Program" and marker.read_text() == "ran"


@pytest.mark.parametrize("where", ["chain step", "tool"])
def test_nested_imports_are_checked_too(
    tmp_path: Path, marker_module: tuple[str, Path], where: str
) -> None:
    name, marker = marker_module
    path = tmp_path / "program.json"
    if where == "chain step":
        Chain("q -> d", "d -> a").save(path)

        def change(d: dict[str, Any]) -> None:
            d["program"]["config"]["steps"][0]["type"] = f"{name}:Program"
    else:
        ReAct("q -> a", tools=[_tool]).save(path)

        def change(d: dict[str, Any]) -> None:
            d["program"]["config"]["tools"][0]["ref"] = f"{name}:tool"

    _rehash(path, change)
    with pytest.raises(lf.ArtifactError, match=f"{name!r} is not trusted"):
        lf.load(path)
    assert not marker.exists()
    assert type(lf.load(path, trusted_modules=name)) in (Chain, ReAct)


def _tool(text: str) -> str:
    """Echo."""
    return text


@pytest.mark.parametrize(
    ("where", "ref"),
    [
        ("tool", "lmforge.artifact:os.system"),
        ("tool", "os:system"),
        ("program", "lmforge.artifact:Path"),
    ],
)
def test_objects_reached_through_a_trusted_module_must_be_defined_there(
    tmp_path: Path, where: str, ref: str
) -> None:
    # lmforge's own modules are trusted; what they merely import (os, pathlib) is not.
    path = tmp_path / "program.json"
    if where == "tool":
        ReAct("q -> a", tools=[_tool]).save(path)
        _rehash(path, lambda d: d["program"]["config"]["tools"][0].update(ref=ref))
    else:
        lf.Predict("q -> a").save(path)
        _rehash(path, lambda d: d["program"].update(type=ref))
    with pytest.raises(lf.ArtifactError, match=r"not trusted|not in a trusted module"):
        lf.load(path, trusted_modules=[__name__])


def test_trusted_modules_must_be_names(tmp_path: Path) -> None:
    path = tmp_path / "program.json"
    lf.Predict("q -> a").save(path)
    with pytest.raises(lf.UsageError, match="trusted_modules must be module names"):
        lf.load(path, trusted_modules=[3])  # type: ignore[list-item]


# -- paths an artifact records ---------------------------------------------------------


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A folder outside the artifact's, holding a private key (and a PEFT-looking config)."""
    secret = tmp_path / "home" / ".ssh"
    secret.mkdir(parents=True)
    (secret / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (secret / "adapter_config.json").write_text('{"r": 8}')
    return secret


def _finetuned(tmp_path: Path) -> Path:
    """An artifact with a fine-tune adapter folder saved next to it."""
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    path = tmp_path / "shared" / "program.json"
    lf.Predict("q -> a").save(path, meta={"finetune": {"adapter_path": str(adapter)}})
    assert json.loads(path.read_text())["meta"]["finetune"]["adapter_path"].startswith("adapters/")
    return path


def _escapes(tmp_path: Path, planted: Path) -> dict[str, Callable[[dict[str, Any]], None]]:
    artifact_dir = tmp_path / "shared"
    (artifact_dir / "adapters" / "link").symlink_to(planted)

    def finetune(value: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d["meta"]["finetune"].update(adapter_path=value)

    return {
        "dotdot": finetune("../home/.ssh"),
        "absolute": finetune(str(planted)),
        "symlink": finetune("adapters/link"),
        "top-level": lambda d: d["meta"].update(adapter_path="../home/.ssh"),
        "lora": lambda d: d["predictors"]["self"].update(
            lm={"model": "local/gemma-3-270m", "lora": "adapters/link/id_rsa"}
        ),
    }


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "top-level", "lora"])
def test_adapter_paths_leading_out_are_refused_and_nothing_is_copied(
    tmp_path: Path, planted: Path, case: str
) -> None:
    path = _finetuned(tmp_path)
    _rehash(path, _escapes(tmp_path, planted)[case])
    with pytest.raises(lf.ArtifactError, match="points outside the artifact's folder") as refused:
        program = lf.load(path)
        program.save(tmp_path / "copy" / "program.json")  # used to copy the folder along
    assert "\n" not in str(refused.value)
    assert not any((tmp_path / "copy").rglob("id_rsa"))


def test_a_symlink_inside_the_adapter_folder_is_refused(tmp_path: Path, planted: Path) -> None:
    path = _finetuned(tmp_path)
    (adapter,) = (tmp_path / "shared" / "adapters").glob("*/adapter")
    (adapter / "id_rsa").symlink_to(planted / "id_rsa")
    with pytest.raises(lf.ArtifactError, match=r"through adapters/.*/adapter/id_rsa"):
        lf.load(path)


def test_an_adapter_folder_inside_still_travels_with_the_program(tmp_path: Path) -> None:
    path = _finetuned(tmp_path)
    program = lf.load(path)
    program.save(tmp_path / "copy" / "program.json")
    assert len(list((tmp_path / "copy" / "adapters").rglob("adapter_model.safetensors"))) == 1
