"""Program-server overhead against a fixed-latency fake LM.

Starts the program server (uvicorn, separate process) for a ``Predict`` whose LM answers
after exactly ``--latency-ms``, then measures over real HTTP on 127.0.0.1:

1. added latency at concurrency 1: server p50 minus the p50 of calling the same program
   in-process (so it counts HTTP, auth, validation, tracing, metrics and the client);
2. throughput at concurrency 64 as a fraction of the ideal (64 / latency), after one
   uncounted round that opens the 64 connections (steady state, not connection set-up).

Targets: < 2 ms added p50; >= 90% of ideal throughput.

    .venv/bin/python benchmarks/serve.py [--latency-ms 100] [--requests 3200] [--serial 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

KEY = "bench-key-0123456789abcdef"
SIGNATURE = "ticket: str -> team: Literal['billing', 'tech', 'sales']"


class FixedLatencyBackend:
    """An LM backend that answers after exactly ``latency`` seconds. Unlike the test fakes
    it keeps no record of its calls, so a long run costs what a real backend would."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def _answer(self, request: Any) -> Any:
        from lmforge.lm import LMResponse, Usage

        return LMResponse(
            texts=("[[ ## team ## ]]\nbilling",), usage=Usage(40, 5), model=request.model
        )

    def complete(self, request: Any) -> Any:
        time.sleep(self.latency)
        return self._answer(request)

    async def acomplete(self, request: Any) -> Any:
        await asyncio.sleep(self.latency)
        return self._answer(request)


def _program(latency: float) -> Any:
    import lmforge as lf

    lm = lf.LM("bench/fixed-latency", backend=FixedLatencyBackend(latency), cache=False)
    return lf.Predict(SIGNATURE, lm=lm)


def run_server(port: int, latency: float) -> None:
    import logging

    import uvicorn
    from lmforge.targets import ServerConfig, create_app

    logging.getLogger("lmforge.server").setLevel(logging.WARNING)
    config = ServerConfig(
        name="triage",
        api_keys=(KEY,),
        rate_limit_per_minute=1e9,
        rate_limit_burst=10**6,
        max_concurrency=1024,
    )
    uvicorn.run(
        create_app(_program(latency), config),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


async def _direct_p50(latency: float, n: int) -> float:
    program = _program(latency)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await program.acall(ticket="I was charged twice")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument(
        "--serial", type=int, default=60, help="requests for the concurrency-1 measurement"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--_server-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    if args._server_port:
        run_server(args._server_port, latency)
        return

    from lmforge.targets.loadtest import run_load

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--latency-ms",
            str(args.latency_ms),
            "--_server-port",
            str(port),
        ],
        env=env,
    )
    try:
        import httpx

        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        endpoint = f"{url}/v1/programs/triage"
        payload = {"ticket": "I was charged twice"}
        asyncio.run(run_load(endpoint, payload, requests=20, concurrency=4, api_key=KEY))  # warm up
        direct = asyncio.run(_direct_p50(latency, args.serial))
        cpu_before, client_before = _cpu_seconds(server.pid), time.process_time()
        serial = asyncio.run(
            run_load(endpoint, payload, requests=args.serial, concurrency=1, api_key=KEY)
        )
        cpu_after, client_after = _cpu_seconds(server.pid), time.process_time()
        loaded = asyncio.run(
            run_load(
                endpoint,
                payload,
                requests=args.requests,
                concurrency=args.concurrency,
                api_key=KEY,
                warmup=args.concurrency,
            )
        )
        cpu_loaded = _cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    served_p50 = serial.summary()["p50_ms"] / 1000
    ideal = args.concurrency / latency
    result = {
        "latency_ms": args.latency_ms,
        "direct_p50_ms": round(direct * 1000, 2),
        "served_p50_ms": round(served_p50 * 1000, 2),
        "added_p50_ms": round((served_p50 - direct) * 1000, 2),
        "concurrency": args.concurrency,
        "throughput_rps": round(loaded.throughput, 1),
        "ideal_rps": round(ideal, 1),
        "fraction_of_ideal": round(loaded.throughput / ideal, 3),
        "loaded_p50_ms": loaded.summary()["p50_ms"],
        "loaded_p99_ms": loaded.summary()["p99_ms"],
        "server_cpu_ms_per_request": (
            round((cpu_after - cpu_before) * 1000 / args.serial, 3)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        "server_cpu_ms_per_request_loaded": (
            round((cpu_loaded - cpu_after) * 1000 / (args.requests + args.concurrency), 3)
            if cpu_after is not None and cpu_loaded is not None
            else None
        ),
        "client_cpu_ms_per_request": round((client_after - client_before) * 1000 / args.serial, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "errors": dict(loaded.errors) or dict(serial.errors),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    ok = result["added_p50_ms"] < 2.0 and result["fraction_of_ideal"] >= 0.9
    print(
        f"added p50 {result['added_p50_ms']} ms (target < 2); throughput "
        f"{result['fraction_of_ideal']:.1%} of ideal (target >= 90%): {'PASS' if ok else 'MISS'}"
    )


if __name__ == "__main__":
    main()
