"""`import lmforge` stays cheap: no heavy dependency is loaded until it is needed."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "pydantic",
    "jinja2",
    "diskcache",
    "httpx",
    "litellm",
    "platformdirs",
    "rich",
    "typer",
    "asyncio",
    "optuna",
    "fastapi",
    "torch",
    "llama_cpp",
)


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.strip().splitlines()[-1]


def test_import_loads_no_heavy_dependency() -> None:
    names = repr(HEAVY)
    code = f"import sys, json, lmforge\nprint(json.dumps([m for m in {names} if m in sys.modules]))"
    assert json.loads(_run(code)) == []


def test_import_time_is_well_under_half_a_second() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import lmforge"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(row for row in proc.stderr.splitlines() if row.rstrip().endswith("| lmforge"))
    cumulative_ms = int(line.split("|")[1]) / 1000
    assert cumulative_ms < 400, f"import lmforge took {cumulative_ms:.0f} ms"


def test_first_call_loads_what_it_needs() -> None:
    code = (
        "import sys, json, lmforge as lf\n"
        "from lmforge.testing import FunctionLM\n"
        "lm = FunctionLM(lambda r: '[[ ## n ## ]]\\n3')\n"
        "assert lf.Predict('q -> n: int', lm=lm)(q='x').n == 3\n"
        "names = ('jinja2', 'pydantic', 'litellm', 'httpx')\n"
        "print(json.dumps([m for m in names if m in sys.modules]))"
    )
    assert json.loads(_run(code)) == ["jinja2", "pydantic"]
