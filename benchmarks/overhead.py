"""Framework overhead: import time and microseconds per ``Predict`` call, lmforge vs DSPy.

Run it with the project's interpreter::

    python benchmarks/overhead.py                         # lmforge only
    python benchmarks/overhead.py --dspy-python /tmp/dspy-venv/bin/python
    DSPY_PYTHON=/tmp/dspy-venv/bin/python python benchmarks/overhead.py --json out.json

What it measures (every figure is a median; each framework runs in fresh processes):

* import time: wall and CPU (user+sys) time of ``python -c "import X"`` over 7 fresh
  processes, the same minus the interpreter's bare start (``python -c pass``), and the
  cumulative time of the ``X`` line of ``python -X importtime`` (7 processes). On a busy
  machine the CPU figures are the steadier ones.
* per-call overhead: microseconds per ``Predict`` call with a zero-latency LM and every
  cache off, for a 1-input/1-output signature and a 5-input/3-typed-output signature,
  sync and async: 5 runs of 2,000 calls after a warm-up, wall and CPU time.

DSPy runs in its own interpreter (a separate venv, never a dependency of lmforge) through
this same file (``--child dspy``), with a zero-latency ``dspy.BaseLM`` that returns a
pre-built OpenAI-style response (it does no work per call, so everything measured is
framework overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

SIMPLE_REPLY = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
TYPED_REPLY = (
    "[[ ## score ## ]]\n7\n\n[[ ## label ## ]]\npositive\n\n"
    '[[ ## tags ## ]]\n["billing", "refund"]\n\n[[ ## completed ## ]]'
)
SIMPLE_INPUTS: dict[str, Any] = {"question": "What is the capital of France?"}
TYPED_INPUTS: dict[str, Any] = {
    "ticket": "I was charged twice for my subscription this month.",
    "customer": "ACME Corp",
    "history": ["opened 2024-01-02", "refund asked 2024-01-03"],
    "priority": 2,
    "sentiment_hint": 0.25,
}
CASES = ("simple", "typed")
MODES = ("sync", "async")


# -- per-call measurement (runs inside the framework's own interpreter) -----------------


def _timed_runs(call: Callable[[], Any], calls: int, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    walls, cpus = [], []
    for _ in range(runs):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            call()
        walls.append((time.perf_counter() - wall0) / calls * 1e6)
        cpus.append((time.process_time() - cpu0) / calls * 1e6)
    return {
        "wall_us": statistics.median(walls),
        "cpu_us": statistics.median(cpus),
        "best_us": min(walls),
    }


def _timed_async_runs(
    acall: Callable[[], Awaitable[Any]], calls: int, runs: int, warmup: int
) -> dict[str, float]:
    async def main() -> dict[str, float]:
        for _ in range(warmup):
            await acall()
        walls, cpus = [], []
        for _ in range(runs):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await acall()
            walls.append((time.perf_counter() - wall0) / calls * 1e6)
            cpus.append((time.process_time() - cpu0) / calls * 1e6)
        return {
            "wall_us": statistics.median(walls),
            "cpu_us": statistics.median(cpus),
            "best_us": min(walls),
        }

    return asyncio.run(main())


def _check(prediction: Any, case: str) -> None:
    if case == "simple":
        assert prediction.answer == "Paris", prediction
    else:
        assert prediction.score == 7 and prediction.label == "positive", prediction
        assert list(prediction.tags) == ["billing", "refund"], prediction


def child_lmforge(calls: int, runs: int, warmup: int) -> dict[str, Any]:
    import lmforge as lf
    from lmforge.testing import FunctionLM

    class Triage(lf.Signature):
        """Triage a support ticket."""

        ticket: str = lf.InputField()
        customer: str = lf.InputField()
        history: list[str] = lf.InputField()
        priority: int = lf.InputField()
        sentiment_hint: float = lf.InputField()
        score: int = lf.OutputField(desc="urgency from 1 to 10")
        label: Literal["positive", "neutral", "negative"] = lf.OutputField()
        tags: list[str] = lf.OutputField()

    programs = {
        "simple": (lf.Predict("question -> answer"), SIMPLE_REPLY, SIMPLE_INPUTS),
        "typed": (lf.Predict(Triage), TYPED_REPLY, TYPED_INPUTS),
    }
    results: dict[str, Any] = {"version": lf.__version__}
    for case, (program, reply, inputs) in programs.items():
        lm = FunctionLM(lambda _request, reply=reply: reply, cache=False)
        lm.function.calls = _Discard()  # keep memory flat over thousands of calls
        program.lm = lm
        with lf.use(cache=False):
            _check(program(**inputs), case)
            results[f"{case}/sync"] = _timed_runs(
                lambda p=program, i=inputs: p(**i), calls, runs, warmup
            )
            results[f"{case}/async"] = _timed_async_runs(
                lambda p=program, i=inputs: p.acall(**i), calls, runs, warmup
            )
    return results


class _Discard(list):  # type: ignore[type-arg]
    """A list that forgets what is appended (the fake LM's request log)."""

    def append(self, item: Any) -> None:
        return None


def child_dspy(calls: int, runs: int, warmup: int) -> dict[str, Any]:
    import dspy

    class ZeroLatencyLM(dspy.BaseLM):
        """Returns a pre-built OpenAI-style response: no work per call."""

        def __init__(self, reply: str) -> None:
            super().__init__(
                model="zero-latency",
                model_type="chat",
                temperature=0.0,
                max_tokens=1000,
                cache=False,
            )
            self._response = _openai_response(reply)

        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return self._response

        async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return self._response

    class Triage(dspy.Signature):
        """Triage a support ticket."""

        ticket: str = dspy.InputField()
        customer: str = dspy.InputField()
        history: list[str] = dspy.InputField()
        priority: int = dspy.InputField()
        sentiment_hint: float = dspy.InputField()
        score: int = dspy.OutputField(desc="urgency from 1 to 10")
        label: Literal["positive", "neutral", "negative"] = dspy.OutputField()
        tags: list[str] = dspy.OutputField()

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    programs = {
        "simple": (dspy.Predict("question -> answer"), SIMPLE_REPLY, SIMPLE_INPUTS),
        "typed": (dspy.Predict(Triage), TYPED_REPLY, TYPED_INPUTS),
    }
    results: dict[str, Any] = {"version": dspy.__version__}
    for case, (program, reply, inputs) in programs.items():
        lm = ZeroLatencyLM(reply)
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            _check(program(**inputs), case)
            results[f"{case}/sync"] = _timed_runs(
                lambda p=program, i=inputs: p(**i), calls, runs, warmup
            )
            results[f"{case}/async"] = _timed_async_runs(
                lambda p=program, i=inputs: p.acall(**i), calls, runs, warmup
            )
    return results


def _openai_response(text: str) -> Any:
    from types import SimpleNamespace

    message = SimpleNamespace(content=text, tool_calls=None, reasoning_content=None)
    choice = SimpleNamespace(message=message, finish_reason="stop", index=0, logprobs=None)
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    return SimpleNamespace(
        choices=[choice], usage=usage, model="zero-latency", _hidden_params={}, cache_hit=False
    )


# -- import time (measured from the outside, in fresh processes) -----------------------


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.update(extra or {})
    return env


def measure_import(python: str, module: str, runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall and CPU time of ``import module`` in fresh processes, and its importtime."""
    import resource

    with tempfile.TemporaryDirectory() as cwd:

        def timed(code: str) -> tuple[float, float]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([python, "-c", code], cwd=cwd, env=env, check=True, capture_output=True)
            wall = (time.perf_counter() - start) * 1e3
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3
            return wall, cpu

        timed(f"import {module}")  # warm the OS file cache
        bare_runs = [timed("pass") for _ in range(runs)]
        import_runs = [timed(f"import {module}") for _ in range(runs)]
        bare = statistics.median(w for w, _ in bare_runs)
        walls = [w for w, _ in import_runs]
        cpu_ms = statistics.median(c for _, c in import_runs)
        bare_cpu = statistics.median(c for _, c in bare_runs)
        totals = []
        for _ in range(runs):
            proc = subprocess.run(
                [python, "-X", "importtime", "-c", f"import {module}"],
                cwd=cwd,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            totals.append(_importtime_total(proc.stderr, module))
        modules = subprocess.run(
            [
                python,
                "-c",
                f"import sys; n = len(sys.modules); import {module}; print(len(sys.modules) - n)",
            ],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    wall_ms = statistics.median(walls)
    return {
        "wall_ms": wall_ms,
        "net_wall_ms": wall_ms - bare,
        "bare_python_ms": bare,
        "cpu_ms": cpu_ms,
        "net_cpu_ms": cpu_ms - bare_cpu,
        "importtime_ms": statistics.median(totals),
        "modules": int(modules),
    }


def _importtime_total(stderr: str, module: str) -> float:
    """The cumulative microseconds of ``module``'s own line, in milliseconds."""
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[2].rstrip() == f" {module}":
            return int(parts[1]) / 1e3
    raise RuntimeError(f"no importtime line for {module}")


# -- driver -----------------------------------------------------------------------------


def run_child(
    python: str, framework: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    command = [
        python,
        os.path.abspath(__file__),
        "--child",
        framework,
        "--calls",
        str(args.calls),
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
    ]
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{framework} measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dspy-python",
        default=os.environ.get("DSPY_PYTHON"),
        help="interpreter of a venv with dspy installed (or $DSPY_PYTHON)",
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--skip-import", action="store_true", help="per-call figures only")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", choices=("lmforge", "dspy"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        child = child_lmforge if args.child == "lmforge" else child_dspy
        print(json.dumps(child(args.calls, args.runs, args.warmup)))
        return 0

    frameworks: dict[str, tuple[str, str, dict[str, str]]] = {
        "lmforge": (sys.executable, "lmforge", _child_env()),
    }
    if args.dspy_python:
        cache_dir = tempfile.mkdtemp(prefix="dspy-cache-")
        frameworks["dspy"] = (args.dspy_python, "dspy", _child_env({"DSPY_CACHEDIR": cache_dir}))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_before": round(os.getloadavg()[0], 2),
        }
    }
    for name, (python, module, env) in frameworks.items():
        entry: dict[str, Any] = {}
        if not args.skip_import:
            entry["import"] = measure_import(python, module, args.import_runs, env)
        entry["per_call"] = run_child(python, name, args, env)
        results[name] = entry
    results["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    print(render(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


def render(results: dict[str, Any]) -> str:
    names = [n for n in ("lmforge", "dspy") if n in results]
    machine = results["machine"]
    lines = [
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}, "
        f"load average {machine['load_before']} before / {machine.get('load_after', '?')} after"
    ]
    for n in names:
        lines.append(f"{n} {results[n]['per_call'].get('version', '?')}")
    header = f"{'measure':<34}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        header += f"{'lmforge/dspy':>14}"
    lines += ["", header, "-" * len(header)]

    def row(label: str, values: list[float], unit: str) -> None:
        text = f"{label:<34}" + "".join(f"{v:>11.1f} {unit:<2}" for v in values)
        if len(values) == 2 and values[1]:
            text += f"{values[0] / values[1]:>14.3f}"
        lines.append(text)

    if all("import" in results[n] for n in names):
        for key, label in (
            ("wall_ms", "import, wall"),
            ("net_wall_ms", "import, wall minus bare python"),
            ("cpu_ms", "import, CPU (user+sys)"),
            ("net_cpu_ms", "import, CPU minus bare python"),
            ("importtime_ms", "import, -X importtime total"),
        ):
            row(label, [results[n]["import"][key] for n in names], "ms")
        lines.append(
            f"{'import, modules loaded':<34}"
            + "".join(f"{results[n]['import']['modules']:>14}" for n in names)
        )
    for case in CASES:
        for mode in MODES:
            key = f"{case}/{mode}"
            row(
                f"Predict {case} {mode}, wall",
                [results[n]["per_call"][key]["wall_us"] for n in names],
                "us",
            )
            row(
                f"Predict {case} {mode}, CPU",
                [results[n]["per_call"][key]["cpu_us"] for n in names],
                "us",
            )
    lines.append("")
    lines.append(
        "simple = 'question -> answer'; typed = 5 inputs (str, str, list[str], int, float) -> "
        "3 outputs (int, Literal, list[str]); zero-latency LM, caches off, ChatAdapter."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
