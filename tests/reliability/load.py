"""Sustained-load check of the program server: N aiohttp clients for S seconds on loopback.

The server runs in its own process (uvicorn) and serves a ``Predict`` whose LM answers after
a fixed async latency; every client sends its next request as soon as the last one answered.
The server's resident memory is read from ``/proc/PID/status`` once a second.

    .venv/bin/python tests/reliability/load.py --clients 256 --seconds 60 [--json out.json]

Exit status 0 when there were no unexpected errors and memory stayed flat, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

KEY = "load-test-key-0123456789abcdef"
SIGNATURE = "ticket: str -> team: Literal['billing', 'technical', 'shipping']"
# Memory counts as flat when the end of the run is within this of the post-warm-up sample.
FLAT_SLACK_BYTES = 24 * 1024 * 1024
FLAT_SLACK_SHARE = 0.10


@dataclasses.dataclass
class LoadReport:
    """What one load run measured (latencies in milliseconds, memory in MiB)."""

    clients: int
    seconds: float
    latency_ms: float
    requests: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    throughput_rps: float
    rss_start_mib: float
    rss_ramped_mib: float
    rss_end_mib: float
    rss_max_mib: float
    rss_samples: int
    rss_series_mib: list[float] = dataclasses.field(default_factory=list)
    # The server process's CPU time per answered request: steadier than req/s on a busy
    # machine, where waiting for a core inflates latency and so cuts closed-loop throughput.
    server_cpu_ms_per_request: float = 0.0

    @property
    def memory_flat(self) -> bool:
        # Measured from the first sample after ramp-up (10% into the run): opening the
        # clients' connections costs a step of memory once, which is not growth.
        start, end = self.rss_ramped_mib * 2**20, self.rss_end_mib * 2**20
        return end - start <= max(FLAT_SLACK_BYTES, FLAT_SLACK_SHARE * start)

    @property
    def passed(self) -> bool:
        return self.requests > 0 and not self.errors and self.memory_flat

    def summary(self) -> str:
        return (
            f"{self.clients} clients x {self.seconds:g} s: {self.requests} requests, "
            f"{sum(self.errors.values())} errors, {self.throughput_rps:.0f} req/s, "
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"server CPU {self.server_cpu_ms_per_request:.2f} ms/request, "
            f"RSS {self.rss_start_mib:.1f} MiB idle, {self.rss_ramped_mib:.1f} after ramp-up, "
            f"{self.rss_end_mib:.1f} at end (max {self.rss_max_mib:.1f})"
        )


def _quantile(ordered: list[float], share: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class FixedLatencyBackend:
    """An LM backend that answers like a perfect router after a fixed async latency.

    Unlike ``lmforge.testing.FunctionLM`` it keeps no record of its requests, so the
    server's own memory is what the load test measures.
    """

    def __init__(self, latency: float) -> None:
        self.latency = latency

    @staticmethod
    def _reply(request: Any) -> Any:
        from lmforge.lm.types import LMResponse, Usage

        text = request.as_text().rsplit("[[ ## ticket ## ]]", 1)[-1]
        team = "shipping" if "parcel" in text else "technical" if "crash" in text else "billing"
        return LMResponse(
            texts=(f"[[ ## team ## ]]\n{team}\n\n[[ ## completed ## ]]",),
            usage=Usage(prompt_tokens=len(text.split()), completion_tokens=8),
        )

    def complete(self, request: Any) -> Any:
        time.sleep(self.latency)
        return self._reply(request)

    async def acomplete(self, request: Any) -> Any:
        await asyncio.sleep(self.latency)
        return self._reply(request)


def serve(port: int, latency: float) -> None:
    """Run the program server (blocks); used as the child process."""
    import logging

    import lmforge as lf
    import uvicorn
    from lmforge.targets import ServerConfig, create_app
    from lmforge.targets.connections import uvicorn_config

    config = ServerConfig(
        name="route",
        api_keys=(KEY,),
        rate_limit_per_minute=1e9,
        rate_limit_burst=10**6,
        max_concurrency=4096,
        max_connections=4096,
    )
    lm = lf.LM("test/fixed-latency", backend=FixedLatencyBackend(latency), cache=False)
    program = lf.Predict(SIGNATURE, lm=lm, adapter=lf.ChatAdapter())
    # The settings `lmforge serve` uses (connection limits, logging), quieter.
    settings = uvicorn_config(
        create_app(program, config),
        config,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        backlog=4096,
        timeout_graceful_shutdown=5,
    )
    logging.getLogger("lmforge.server").setLevel(logging.WARNING)
    uvicorn.Server(settings).run()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` from /proc (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` from /proc (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(base: str, deadline: float) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the program server did not start")
            await asyncio.sleep(0.1)


async def _drive(
    base: str, pid: int, clients: int, seconds: float
) -> tuple[list[float], Counter[str], list[int]]:
    import aiohttp

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    samples: list[int] = []
    stop_at = time.monotonic() + seconds
    words = ("my invoice is wrong", "the app crashes", "parcel never came")
    expected = {0: "billing", 1: "technical", 2: "shipping"}

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while time.monotonic() < stop_at:
            kind = (index + n) % 3
            n += 1
            body = {"ticket": f"{words[kind]} (client {index}, request {n})"}
            started = time.perf_counter()
            try:
                async with session.post(f"{base}/v1/programs/route", json=body) as response:
                    payload = await response.json(content_type=None)
                    if response.status != 200:
                        errors[f"http {response.status}"] += 1
                    elif payload.get("team") != expected[kind]:
                        errors["wrong answer"] += 1
                    else:
                        latencies.append(time.perf_counter() - started)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                errors[type(exc).__name__] += 1

    async def sample_memory() -> None:
        while time.monotonic() < stop_at:
            samples.append(rss_bytes(pid))
            await asyncio.sleep(1.0)
        samples.append(rss_bytes(pid))

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        await asyncio.gather(sample_memory(), *(client(i, session) for i in range(clients)))
    return latencies, errors, samples


def run_load(clients: int = 256, seconds: float = 60.0, latency: float = 0.05) -> LoadReport:
    """Start the server process, drive it, stop it; the figures of the run."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--serve",
            str(port),
            "--latency",
            str(latency),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_ready(base, time.monotonic() + 60))
        # A short warm-up so the first memory sample is taken after imports and first calls.
        asyncio.run(_drive(base, proc.pid, min(clients, 32), 2.0))
        started, cpu_start = time.perf_counter(), cpu_seconds(proc.pid)
        latencies, errors, samples = asyncio.run(_drive(base, proc.pid, clients, seconds))
        wall, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu_start
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.returncode not in (0, -signal.SIGTERM):
        stderr = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        errors[f"server exit {proc.returncode}"] += 1
        print(stderr, file=sys.stderr)
    if proc.stderr:
        proc.stderr.close()
    ordered = sorted(x * 1000 for x in latencies)
    mib = [s / 2**20 for s in samples if s]
    return LoadReport(
        clients=clients,
        seconds=seconds,
        latency_ms=latency * 1000,
        requests=len(ordered) + sum(errors.values()),
        errors=dict(errors),
        p50_ms=_quantile(ordered, 0.5),
        p99_ms=_quantile(ordered, 0.99),
        max_ms=ordered[-1] if ordered else 0.0,
        throughput_rps=len(ordered) / wall if wall else 0.0,
        rss_start_mib=mib[0] if mib else 0.0,
        rss_ramped_mib=mib[max(1, len(mib) // 10)] if len(mib) > 1 else 0.0,
        rss_end_mib=mib[-1] if mib else 0.0,
        rss_max_mib=max(mib) if mib else 0.0,
        rss_samples=len(mib),
        rss_series_mib=[round(x, 1) for x in mib],
        server_cpu_ms_per_request=cpu * 1000 / len(ordered) if ordered else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.05, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.latency)
        return 0
    report = run_load(args.clients, args.seconds, args.latency_ms / 1000)
    print(report.summary())
    if args.json:
        figures = {
            **dataclasses.asdict(report),
            "memory_flat": report.memory_flat,
            "passed": report.passed,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
