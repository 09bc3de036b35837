"""Batch throughput against a fixed-latency OpenAI-compatible server, as a fraction of ideal.

    python benchmarks/throughput.py                      # built-in HTTP and litellm clients
    python benchmarks/throughput.py --clients http --calls 400 --latency 0.1 --concurrency 8 32 64
    python benchmarks/throughput.py --sync               # also the thread-based Module.batch
    python benchmarks/throughput.py --dspy-python /tmp/dspy-venv/bin/python   # DSPy too

A fake server (its own process, bound to 127.0.0.1, answering every request after a fixed
latency, and stopping by itself after a bounded number of requests) stands in for vLLM.
``Predict("question -> answer").abatch(400 items, concurrency=c)`` runs against it through
each LM client; ideal time is ``ceil(calls / c) * latency``, and the fraction of ideal is
``ideal / measured``. The client's CPU per request is what limits it at high concurrency.
Caches are off and every item is distinct. With ``--dspy-python`` (or ``$DSPY_PYTHON``), the
same load runs through ``dspy.Predict`` (DSPy's default client, ``acall`` under an asyncio
semaphore) in that interpreter, against the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from typing import Any

REPLY = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


# -- the fake server (runs in its own process) -----------------------------------------


async def _serve(port_file: str, latency: float, max_requests: int, lifetime: float) -> None:
    served = 0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while not done.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = json.loads(await reader.readexactly(length)) if length else {}
                served += 1
                if served >= max_requests:
                    done.set()
                await asyncio.sleep(latency)
                writer.write(_response(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w", encoding="utf-8") as handle_file:
        handle_file.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    async with server:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=lifetime)


def _response(body: dict[str, Any]) -> bytes:
    usage = {"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58}
    if "messages" in body:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": REPLY},
            "finish_reason": "stop",
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": " Paris", "finish_reason": "stop"}
        kind = "text_completion"
    payload = json.dumps(
        {
            "id": "cmpl-1",
            "object": kind,
            "created": 1,
            "model": body.get("model", "m"),
            "choices": [choice],
            "usage": usage,
        }
    ).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
    return head.encode() + b"\r\n\r\n" + payload


def start_server(
    latency: float, max_requests: int, lifetime: float
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the fake server process; returns it and its ``/v1`` base URL."""
    import tempfile

    port_file = os.path.join(tempfile.mkdtemp(prefix="lmforge-bench-"), "port")
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--serve",
            port_file,
            "--latency",
            str(latency),
            "--max-requests",
            str(max_requests),
            "--lifetime",
            str(lifetime),
        ],
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the fake server did not start")
        time.sleep(0.02)
    with open(port_file, encoding="utf-8") as handle:
        port = int(handle.read())
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    return proc, f"http://127.0.0.1:{port}/v1"


# -- the client measurement ------------------------------------------------------------


async def measure(
    client: str, base: str, calls: int, levels: list[int], latency: float, *, sync: bool = False
) -> dict[str, Any]:
    """``abatch`` (or, with ``sync``, the thread-based ``batch``) through one LM client."""
    import lmforge as lf

    lm = lf.LM("hosted_vllm/bench-model", api_base=base, client=client, cache=False, timeout=30)  # type: ignore[arg-type]
    program = lf.Predict("question -> answer", lm=lm)

    async def batch(items: list[dict[str, Any]], level: int) -> list[Any]:
        if sync:
            return await asyncio.to_thread(program.batch, items, concurrency=level)
        return await program.abatch(items, concurrency=level)

    warm = await batch([{"question": f"warm-up {i}"} for i in range(8)], 8)
    if any(isinstance(r, lf.BatchError) for r in warm):
        raise SystemExit(
            f"{client}: warm-up failed: {next(r for r in warm if isinstance(r, lf.BatchError))}"
        )
    results: dict[str, Any] = {"backend": type(lm.backend).__name__}
    for level in levels:
        items = [{"question": f"question {level}-{i}"} for i in range(calls)]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = await batch(items, level)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        ideal = math.ceil(calls / level) * latency
        errors = [r for r in out if isinstance(r, lf.BatchError)]
        results[str(level)] = {
            "seconds": wall,
            "ideal_seconds": ideal,
            "fraction_of_ideal": ideal / wall,
            "requests_per_second": calls / wall,
            "client_cpu_ms_per_request": cpu / calls * 1e3,
            "errors": len(errors),
            "first_error": str(errors[0]) if errors else None,
        }
    return results


async def measure_dspy(base: str, calls: int, levels: list[int], latency: float) -> dict[str, Any]:
    """The same load through ``dspy.Predict`` (runs in DSPy's own interpreter)."""
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM(
        "hosted_vllm/bench-model", api_base=base, api_key="none", cache=False, num_retries=0
    )
    program = dspy.Predict("question -> answer")

    async def batch(items: list[str], level: int) -> list[Any]:
        semaphore = asyncio.Semaphore(level)

        async def one(question: str) -> Any:
            async with semaphore:
                try:
                    return await program.acall(question=question)
                except Exception as exc:  # counted, like lmforge's BatchError
                    return exc

        return await asyncio.gather(*(one(q) for q in items))

    results: dict[str, Any] = {"backend": f"dspy {dspy.__version__}"}
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        await batch([f"warm-up {i}" for i in range(8)], 8)
        for level in levels:
            items = [f"question {level}-{i}" for i in range(calls)]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            out = await batch(items, level)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            ideal = math.ceil(calls / level) * latency
            errors = [r for r in out if isinstance(r, Exception)]
            results[str(level)] = {
                "seconds": wall,
                "ideal_seconds": ideal,
                "fraction_of_ideal": ideal / wall,
                "requests_per_second": calls / wall,
                "client_cpu_ms_per_request": cpu / calls * 1e3,
                "errors": len(errors),
                "first_error": repr(errors[0]) if errors else None,
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clients", nargs="+", default=["http", "litellm"], choices=["http", "litellm"]
    )
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument(
        "--dspy-python",
        default=os.environ.get("DSPY_PYTHON"),
        help="interpreter of a venv with dspy installed (or $DSPY_PYTHON)",
    )
    parser.add_argument(
        "--sync", action="store_true", help="also measure the thread-based Module.batch"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--child-dspy", help=argparse.SUPPRESS)
    parser.add_argument("--max-requests", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=900.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        asyncio.run(_serve(args.serve, args.latency, args.max_requests, args.lifetime))
        return 0
    if args.child_dspy:
        print(
            json.dumps(
                asyncio.run(
                    measure_dspy(args.child_dspy, args.calls, args.concurrency, args.latency)
                )
            )
        )
        return 0

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    runs = [name for c in args.clients for name in ([c, f"{c}-sync"] if args.sync else [c])]
    runs += ["dspy"] if args.dspy_python else []
    budget = (args.calls * len(args.concurrency) + 16) * len(runs)
    proc, base = start_server(args.latency, budget, lifetime=600.0)
    results: dict[str, Any] = {
        "calls": args.calls,
        "latency_s": args.latency,
        "cpus": os.cpu_count(),
        "load_before": round(os.getloadavg()[0], 2),
    }
    try:
        for client in args.clients:
            results[client] = asyncio.run(
                measure(client, base, args.calls, args.concurrency, args.latency)
            )
            if args.sync:
                results[f"{client}-sync"] = asyncio.run(
                    measure(client, base, args.calls, args.concurrency, args.latency, sync=True)
                )
        if args.dspy_python:
            results["dspy"] = _run_dspy(args, base)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    results["load_after"] = round(os.getloadavg()[0], 2)
    print(render(results, runs, args.concurrency))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


def _run_dspy(args: argparse.Namespace, base: str) -> dict[str, Any]:
    import tempfile

    command = [
        args.dspy_python,
        os.path.abspath(__file__),
        "--child-dspy",
        base,
        "--calls",
        str(args.calls),
        "--latency",
        str(args.latency),
        "--concurrency",
        *map(str, args.concurrency),
    ]
    env = {**os.environ, "DSPY_CACHEDIR": tempfile.mkdtemp(prefix="dspy-cache-")}
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dspy measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(results: dict[str, Any], clients: list[str], levels: list[int]) -> str:
    lines = [
        f"{results['calls']} calls, {results['latency_s'] * 1e3:.0f} ms server latency, "
        f"{results['cpus']} CPUs, load average {results['load_before']} before / "
        f"{results['load_after']} after",
        "cells: fraction of ideal (higher is better), requests/s, client CPU ms per request",
        "",
        f"{'client':<32}" + "".join(f"{'c=' + str(c):>24}" for c in levels),
    ]
    for client in clients:
        entry = results[client]
        cells = []
        for level in levels:
            r = entry[str(level)]
            note = f" ({r['errors']} err)" if r["errors"] else ""
            cells.append(
                f"{r['fraction_of_ideal']:.2f} {r['requests_per_second']:6.0f}/s "
                f"{r['client_cpu_ms_per_request']:4.1f}ms{note}"
            )
        lines.append(
            f"{client + ' (' + entry['backend'] + ')':<32}" + "".join(f"{c:>24}" for c in cells)
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
