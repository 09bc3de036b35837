"""The install extras in pyproject.toml: ``all`` installs every user extra, and ``vllm``
installs what the client side of a vLLM bundle (the program server) needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_SELF = re.compile(r"^lmforge\[([^\]]+)\]$")


def _extras() -> dict[str, list[str]]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return dict(data["project"]["optional-dependencies"])


def _requirements(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """The third-party requirements ``extra`` installs, its ``lmforge[...]`` parts expanded."""
    found: set[str] = set()
    for requirement in extras[extra]:
        match = _SELF.match(requirement.replace(" ", ""))
        if match is None:
            found.add(requirement)
            continue
        for name in match.group(1).split(","):
            assert name in extras, f"{extra} names an unknown extra {name!r}"
            found |= _requirements(name, extras)
    return found


def test_all_installs_every_user_extra() -> None:
    extras = _extras()
    everything = _requirements("all", extras)
    for extra in sorted(set(extras) - {"all", "dev"}):
        missing = _requirements(extra, extras) - everything
        assert not missing, f"lmforge[all] lacks the {extra} extra's {sorted(missing)}"


def test_vllm_extra_installs_the_program_server() -> None:
    extras = _extras()
    assert _requirements("serve", extras) <= _requirements("vllm", extras)
