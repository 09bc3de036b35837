"""Head to head with DSPy: one table of ratios, every figure measured in the same run.

    DSPY_PYTHON=$(bash benchmarks/_dspy_env.sh)
    .venv/bin/python benchmarks/vs_dspy.py --dspy-python "$DSPY_PYTHON" [--json out.json]
    .venv/bin/python benchmarks/vs_dspy.py --quick        # smaller runs, same table
    .venv/bin/python benchmarks/vs_dspy.py --skip-optimizer

Rows (each framework in fresh processes of its own interpreter; DSPy in its own venv):

* import time and per-call framework overhead: ``benchmarks/overhead.py``;
* batch throughput at concurrency 8/32/64 against a fixed-latency OpenAI-compatible
  server: ``benchmarks/throughput.py`` (lmforge's built-in HTTP client, DSPy's default);
* cache re-run: N distinct calls against that server with each framework's cache on, then
  the same N again in the same process (memory), then in a fresh process (disk);
* optimizer: BootstrapFewShot (both frameworks' own) on the ticket-router example, scored
  on its test split, with the embedded Gemma 3 270M served by llama.cpp's OpenAI-compatible
  server (``python -m llama_cpp.server``) to both; LM calls counted by each framework.

Ratios are DSPy / lmforge for times (above 1: lmforge is faster) and lmforge / DSPy for
scores and throughput (above 1: lmforge is better).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from throughput import start_server  # noqa: E402

SIGNATURE_DOC = "Route the customer support ticket to the team that should handle it."
TEAM_TYPE = "Literal['billing', 'technical', 'account', 'shipping', 'sales']"


# -- children: run inside one framework's interpreter ----------------------------------


async def _gather(call: Any, items: list[str], level: int) -> list[Any]:
    semaphore = asyncio.Semaphore(level)

    async def one(question: str) -> Any:
        async with semaphore:
            try:
                return await call(question)
            except Exception as exc:  # counted below
                return exc

    return await asyncio.gather(*(one(q) for q in items))


def child_cache(
    framework: str, base: str, calls: int, level: int, phases: list[str]
) -> dict[str, Any]:
    """Time ``calls`` distinct questions per phase with the cache on (phases: cold, warm)."""
    if framework == "lmforge":
        import lmforge as lf

        lm = lf.LM(
            "hosted_vllm/bench-model",
            api_base=base,
            timeout=30,
            cache=os.environ["BENCH_CACHE_DIR"],
        )
        program = lf.Predict("question -> answer", lm=lm)

        async def call(question: str) -> Any:
            return await program.acall(question=question)
    else:
        import dspy

        dspy.configure_cache(
            enable_disk_cache=True,
            enable_memory_cache=True,
            disk_cache_dir=os.environ["BENCH_CACHE_DIR"],
        )
        lm = dspy.LM(
            "hosted_vllm/bench-model", api_base=base, api_key="none", cache=True, num_retries=0
        )
        program = dspy.Predict("question -> answer")
        dspy.configure(lm=lm, adapter=dspy.ChatAdapter())

        async def call(question: str) -> Any:
            return await program.acall(question=question)

    items = [f"cached question {i}" for i in range(calls)]
    out: dict[str, Any] = {}
    for phase in phases:
        started = time.perf_counter()
        results = asyncio.run(_gather(call, items, level))
        out[phase] = time.perf_counter() - started
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise SystemExit(f"{framework} cache run: {len(errors)} errors, first: {errors[0]!r}")
    return out


def _tickets(split: str, limit: int) -> list[dict[str, str]]:
    path = ROOT / "examples" / "data" / "tickets" / f"{split}.jsonl"
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return rows[:limit]


def child_optimizer(framework: str, base: str, train_n: int, test_n: int) -> dict[str, Any]:
    """BootstrapFewShot on the ticket router; test score before and after, and LM calls."""
    train, test = _tickets("train", train_n), _tickets("test", test_n)
    settings = {"max_bootstrapped_demos": 3, "max_labeled_demos": 3}
    if framework == "lmforge":
        import lmforge as lf
        from lmforge.optimizers import BootstrapFewShot

        route = lf.Signature.parse(f"ticket: str -> team: {TEAM_TYPE}").with_instructions(
            SIGNATURE_DOC
        )

        lm = lf.LM(
            "hosted_vllm/gemma",
            api_base=base,
            model_type="text",
            cache=False,
            temperature=0.0,
            max_tokens=24,
            timeout=120,
        )
        trainset = [lf.Example(r).with_inputs("ticket") for r in train]
        testset = [lf.Example(r).with_inputs("ticket") for r in test]

        def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
            return bool(prediction.team == example.team)

        with lf.use(lm=lm, adapter=lf.CompletionAdapter(), max_concurrency=1), lf.track() as t:
            zero_shot = lf.evaluate(
                lf.Predict(route), testset, metric, concurrency=1, progress=False
            )
            calls0 = len(t.calls)
            compiled = BootstrapFewShot(**settings).compile(
                lf.Predict(route),
                trainset,
                metric=metric,
                lm=lm,
                progress=False,
                concurrency=1,
            )
            compile_calls = len(t.calls) - calls0
            few_shot = lf.evaluate(compiled, testset, metric, concurrency=1, progress=False)
        failed = [row for result in (zero_shot, few_shot) for row in result.rows if row.failed]
        return {
            "before": zero_shot.score,
            "after": few_shot.score,
            "compile_calls": compile_calls,
            "total_calls": len(t.calls),
            "version": lf.__version__,
            "errors": len(failed),
            "first_error": f"{failed[0].error_type}: {failed[0].error}"[:300] if failed else None,
        }

    from typing import Literal

    import dspy

    teams = Literal["billing", "technical", "account", "shipping", "sales"]  # type: ignore[valid-type]
    droute = dspy.make_signature(
        {"ticket": (str, dspy.InputField()), "team": (teams, dspy.OutputField())}, SIGNATURE_DOC
    )

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM(
        "openai/gemma",
        api_base=base,
        api_key="none",
        model_type="text",
        cache=False,
        temperature=0.0,
        max_tokens=24,
        num_retries=1,
    )
    # DSPy has no completion-style adapter: its ChatAdapter flattened into a text prompt is
    # its way to drive a base model. Its JSON fallback sends ``response_format``, which text
    # completion endpoints refuse, so it is off (a failed parse then scores 0, as in lmforge).
    dspy.configure(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False))
    trainset = [dspy.Example(**r).with_inputs("ticket") for r in train]
    testset = [dspy.Example(**r).with_inputs("ticket") for r in test]

    def dmetric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return bool(getattr(prediction, "team", None) == example.team)

    errors: list[str] = []

    def score(program: Any) -> float:
        hits = 0
        for example in testset:
            # A failed parse scores 0, as in lmforge.
            try:
                hits += dmetric(example, program(**example.inputs()))
            except Exception as exc:
                errors.append(repr(exc))
        return hits / len(testset)

    before = score(dspy.Predict(droute))
    calls0 = len(lm.history)
    compiled = dspy.BootstrapFewShot(metric=dmetric, **settings).compile(
        dspy.Predict(droute), trainset=trainset
    )
    compile_calls = len(lm.history) - calls0
    after = score(compiled)
    return {
        "before": before,
        "after": after,
        "compile_calls": compile_calls,
        "total_calls": len(lm.history),
        "version": dspy.__version__,
        "errors": len(errors),
        "first_error": errors[0][:300] if errors else None,
    }


# -- driver ----------------------------------------------------------------------------


def _child(
    python: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 1200
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(
            [python, str(Path(__file__).resolve()), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _script(name: str, args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, str(HERE / name), *args, "--json", str(out)]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, stdout=sys.stderr)
        return dict(json.loads(out.read_text()))


def measure_cache(dspy_python: str, calls: int, level: int, latency: float) -> dict[str, Any]:
    proc, base = start_server(latency, 4 * calls + 16, lifetime=600.0)
    results: dict[str, Any] = {}
    try:
        for name, python in (("lmforge", sys.executable), ("dspy", dspy_python)):
            env = {
                "BENCH_CACHE_DIR": tempfile.mkdtemp(prefix=f"{name}-bench-cache-"),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
            first = _child(
                python, ["--child-cache", name, base, str(calls), str(level), "cold,warm"], env
            )
            disk = _child(
                python, ["--child-cache", name, base, str(calls), str(level), "disk"], env
            )
            results[name] = {**first, **disk}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    python: str = sys.executable, *, n_ctx: int = 4096, n_threads_batch: int = 1
) -> Iterator[str]:
    """The embedded model served by ``llama_cpp.server`` (1 generation thread); yields its
    /v1 URL and stops the server on exit."""
    from lmforge.lm.local import LocalBackend

    model = LocalBackend.for_model("local/gemma-3-270m").path
    port = _free_port()
    command = [python, "-m", "llama_cpp.server", "--model", str(model), "--model_alias"]
    command += ["gemma", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    command += ["--n_threads", "1", "--n_threads_batch", str(n_threads_batch)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        "llama_cpp.server did not start (pip install 'llama-cpp-python[server]')"
                    ) from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=20)


def measure_optimizer(dspy_python: str, train_n: int, test_n: int) -> dict[str, Any]:
    with llama_server(n_ctx=2048, n_threads_batch=2) as base:
        results = {}
        for name, python in (("lmforge", sys.executable), ("dspy", dspy_python)):
            started = time.perf_counter()
            results[name] = _child(
                python,
                ["--child-optimizer", name, base, str(train_n), str(test_n)],
                {"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            )
            results[name]["seconds"] = time.perf_counter() - started
        return results


def render(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def time_row(label: str, lmf: float, dsp: float, unit: str) -> None:
        rows.append(
            (label, f"{lmf:.1f} {unit}", f"{dsp:.1f} {unit}", f"{dsp / lmf:.2f}x" if lmf else "-")
        )

    o = r.get("overhead")
    if o:
        for key, label in (
            ("net_wall_ms", "import (wall minus bare python)"),
            ("importtime_ms", "import (-X importtime)"),
        ):
            time_row(label, o["lmforge"]["import"][key], o["dspy"]["import"][key], "ms")
        for case in ("simple/sync", "simple/async", "typed/sync", "typed/async"):
            time_row(
                f"per-call overhead, {case}",
                o["lmforge"]["per_call"][case]["wall_us"],
                o["dspy"]["per_call"][case]["wall_us"],
                "us",
            )
    t = r.get("throughput")
    if t:
        for level in t["levels"]:
            lmf, dsp = t["http"][str(level)], t["dspy"][str(level)]
            rows.append(
                (
                    f"batch throughput, c={level} "
                    f"({t['calls']} calls, {t['latency_s'] * 1e3:.0f} ms)",
                    f"{lmf['requests_per_second']:.0f}/s ({lmf['fraction_of_ideal']:.2f})",
                    f"{dsp['requests_per_second']:.0f}/s ({dsp['fraction_of_ideal']:.2f})",
                    f"{lmf['requests_per_second'] / dsp['requests_per_second']:.2f}x",
                )
            )
    c = r.get("cache")
    if c:
        for phase, label in (
            ("cold", "cache: first run"),
            ("warm", "cache: re-run, same process"),
            ("disk", "cache: re-run, fresh process"),
        ):
            time_row(
                f"{label} ({r['cache_calls']} calls)",
                c["lmforge"][phase] * 1e3,
                c["dspy"][phase] * 1e3,
                "ms",
            )
    p = r.get("optimizer")
    if p:
        lmf, dsp = p["lmforge"], p["dspy"]
        rows.append(
            ("optimizer: test score zero-shot", f"{lmf['before']:.2f}", f"{dsp['before']:.2f}", "-")
        )
        rows.append(
            (
                "optimizer: test score after BootstrapFewShot",
                f"{lmf['after']:.2f}",
                f"{dsp['after']:.2f}",
                f"{lmf['after'] / dsp['after']:.2f}x" if dsp["after"] else "-",
            )
        )
        rows.append(
            (
                "optimizer: LM calls to compile",
                str(lmf["compile_calls"]),
                str(dsp["compile_calls"]),
                f"{dsp['compile_calls'] / lmf['compile_calls']:.2f}x"
                if lmf["compile_calls"]
                else "-",
            )
        )
        rows.append(
            (
                "optimizer: test predictions that failed (of 2 x test)",
                str(lmf.get("errors", "?")),
                str(dsp.get("errors", "?")),
                "-",
            )
        )
        time_row(
            "optimizer: wall time (eval + compile + eval)", lmf["seconds"], dsp["seconds"], "s"
        )
    header = ("measure", "lmforge", "dspy", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(
        "ratio: DSPy/lmforge for times and calls, lmforge/DSPy for throughput and score "
        "(above 1: lmforge ahead)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dspy-python", default=os.environ.get("DSPY_PYTHON", "/tmp/dspy-venv/bin/python")
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (same rows)")
    parser.add_argument(
        "--skip-optimizer", action="store_true", help="leave out the local-model row"
    )
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--child-cache", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--child-optimizer", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_cache:
        name, base, calls, level, phases = args.child_cache
        print(json.dumps(child_cache(name, base, int(calls), int(level), phases.split(","))))
        return 0
    if args.child_optimizer:
        name, base, train_n, test_n = args.child_optimizer
        print(json.dumps(child_optimizer(name, base, int(train_n), int(test_n))))
        return 0
    if not Path(args.dspy_python).exists():
        raise SystemExit("no DSPy interpreter: DSPY_PYTHON=$(bash benchmarks/_dspy_env.sh)")

    quick = args.quick
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
    results["overhead"] = _script(
        "overhead.py",
        [
            "--dspy-python",
            args.dspy_python,
            "--calls",
            "500" if quick else "2000",
            "--runs",
            "3" if quick else "5",
            "--warmup",
            "100",
            "--import-runs",
            "3" if quick else "7",
        ],
    )
    levels = [8, 32, 64]
    calls = 200 if quick else 400
    results["throughput"] = _script(
        "throughput.py",
        [
            "--dspy-python",
            args.dspy_python,
            "--clients",
            "http",
            "--calls",
            str(calls),
            "--latency",
            "0.1",
            "--concurrency",
            *map(str, levels),
        ],
    )
    results["throughput"]["levels"] = levels
    results["cache_calls"] = 200 if quick else 400
    print("$ cache re-run", flush=True)
    results["cache"] = measure_cache(args.dspy_python, results["cache_calls"], 16, 0.02)
    if not args.skip_optimizer:
        print("$ optimizer on the local model (llama.cpp server)", flush=True)
        results["optimizer"] = measure_optimizer(
            args.dspy_python, 6 if quick else 8, 8 if quick else 12
        )
    results["load_after"] = round(os.getloadavg()[0], 2)
    print()
    print(
        f"{results['cpus']} CPUs, load average {results['load_before']} before / "
        f"{results['load_after']} after"
    )
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
