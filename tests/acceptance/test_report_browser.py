"""report.html in headless Chromium: it renders (screenshot not blank), the plotly chart is
drawn by the inline scripts, and the file names no external URL.

Needs Chromium (Debian: ``apt-get install -y chromium``); skipped when it is missing.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("plotly")

from lmforge.optimizers.report import external_urls, write_html

pytestmark = pytest.mark.slow


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


def browse(html: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
        *extra,
        html.resolve().as_uri(),
    ]
    return subprocess.run(args, capture_output=True, timeout=120, check=False)


def report() -> dict[str, Any]:
    trials = [
        {"trial": i, "kind": "minibatch", "score": (i % 4) / 4, "label": f"choice {i}"}
        for i in range(1, 13)
    ]
    trials += [
        {"trial": 5, "kind": "full", "score": 0.6},
        {"trial": 10, "kind": "full", "score": 0.8},
    ]
    return {
        "title": "lmforge compile report: ticket_router",
        "program": "examples/ticket_router.py:program",
        "runs": [
            {
                "model": "local/gemma-3-270m",
                "optimizer": "mipro",
                "config": {"num_trials": 12},
                "scores": {"baseline": 0.3, "dev": 0.8, "test": 0.75},
                "trials": trials,
                "candidates": [
                    {"candidate": 0, "kind": "baseline", "score": 0.3},
                    {"candidate": 1, "kind": "full", "score": 0.8, "best": True},
                ],
                "prompts": {
                    "self": {
                        "instructions": "Route the ticket (docs: https://example.com).",
                        "demos": 3,
                        "prompt": "Ticket: {ticket}\nTeam:",
                    }
                },
                "usage": {"lm_calls": 321, "cost_usd": None},
            }
        ],
    }


def png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct pixel values of an 8-bit RGB(A) PNG (no filters
    undone beyond what is needed to count colours roughly: rows are decoded fully)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        if row % 9 == 0:
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, channels * 7))
        previous = line
    return width, height, colours


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    html = write_html(report(), tmp_path / "report.html")
    text = html.read_text(encoding="utf-8")
    assert external_urls(text) == []
    assert not re.search(r"https?://", text, re.I)

    shot = tmp_path / "report.png"
    result = browse(html, tmp_path / "profile-1", f"--screenshot={shot}")
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    width, height, colours = png_pixels(shot)
    assert (width, height) == (1200, 900)
    assert len(colours) > 20  # text, cards and the chart: far from a blank page

    dom = browse(html, tmp_path / "profile-2", "--virtual-time-budget=10000", "--dump-dom")
    page = dom.stdout.decode(errors="replace")
    assert 'id="trials-plot-0"' in page
    # plotly ran: it adds its classes and draws SVG layers with the trial markers
    assert (
        re.search(r'id="trials-plot-0"[^>]*class="[^"]*js-plotly-plot', page)
        or "js-plotly-plot" in page
    )
    assert page.count('class="main-svg"') >= 2
    assert re.search(r'class="point"', page)
