"""A small async load generator for a served program (used by ``lmforge bench``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["LoadResult", "percentile", "run_load"]


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (nearest rank) of ``values``; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


@dataclasses.dataclass(frozen=True)
class LoadResult:
    requests: int
    concurrency: int
    wall_s: float
    latencies_s: tuple[float, ...]
    errors: Mapping[str, int]

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat = list(self.latencies_s)
        return {
            "requests": self.requests,
            "concurrency": self.concurrency,
            "ok": self.ok,
            "errors": dict(self.errors),
            "wall_s": round(self.wall_s, 3),
            "throughput_rps": round(self.throughput, 2),
            "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
            "p95_ms": round(percentile(lat, 0.95) * 1000, 2),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        }


async def run_load(
    url: str,
    payload: Mapping[str, Any],
    *,
    requests: int,
    concurrency: int,
    api_key: str | None = None,
    timeout: float = 120.0,
    warmup: int = 0,
) -> LoadResult:
    """POST ``payload`` to ``url`` ``requests`` times with ``concurrency`` in flight.

    ``warmup`` requests go first over the same connections and are not counted, so the
    figures describe the steady state rather than connection set-up.

    Uses aiohttp (a dependency of litellm, so always present): at high concurrency its
    client costs a fraction of httpx's CPU per request, which keeps the load generator
    from being what is measured.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = json.dumps(dict(payload)).encode()
    headers["Content-Type"] = "application/json"
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    session = aiohttp.ClientSession(connector=connector, headers=headers, timeout=client_timeout)

    async def phase(count: int, record: bool) -> float:
        remaining = iter(range(count))

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    if record:
                        errors[type(exc).__name__] += 1
                    continue
                if not record:
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[f"HTTP {status}"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started

    async with session:
        if warmup > 0:
            await phase(warmup, record=False)
        wall = await phase(requests, record=True)
    return LoadResult(requests, concurrency, wall, tuple(latencies), dict(errors))
