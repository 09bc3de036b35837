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


def test_import_loads_few_modules() -> None:
    # Import time itself is measured by benchmarks/overhead.py; a module count is the
    # deterministic proxy that catches a heavy import sneaking in.
    code = (
        "import sys, json\nbefore = set(sys.modules)\nimport lmforge\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    added = json.loads(_run(code))
    assert len(added) < 120, f"import lmforge loaded {len(added)} modules: {added}"


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
