"""Compile reports: JSON, and self-contained HTML with an inline plotly chart."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from lmforge.errors import MissingExtraError, UsageError

pytest.importorskip("plotly")

from lmforge.optimizers import report


def sample_report() -> dict[str, Any]:
    return {
        "title": "compile report: triage",
        "program": "examples/ticket_router.py:program",
        "runs": [
            {
                "model": "test/model-a",
                "optimizer": "mipro",
                "config": {"num_trials": 4, "docs": "see https://example.com/docs"},
                "scores": {"baseline": 0.25, "dev": 0.75, "test": 0.5},
                "trials": [
                    {
                        "trial": 1,
                        "kind": "minibatch",
                        "score": 0.25,
                        "label": "instruction 0, demo set 0",
                    },
                    {
                        "trial": 2,
                        "kind": "minibatch",
                        "score": 0.5,
                        "label": "instruction 1, demo set 2",
                    },
                    {
                        "trial": 2,
                        "kind": "full",
                        "score": 0.75,
                        "label": "instruction 1, demo set 2",
                    },
                    {"trial": 3, "kind": "minibatch", "score": float("nan")},
                ],
                "candidates": [
                    {"candidate": 0, "kind": "baseline", "score": 0.25},
                    {
                        "candidate": 1,
                        "kind": "full",
                        "score": 0.75,
                        "choice": "instruction 1",
                        "best": True,
                    },
                ],
                "prompts": {
                    "self": {
                        "instructions": "Route <b>the</b> ticket.",
                        "demos": 2,
                        "prompt": "Ticket: {ticket}\nTeam:",
                    }
                },
                "usage": {"lm_calls": 120, "cost_usd": 0.0123, "cache_hits": 3},
                "wall_s": 12.5,
                "stopped": "budget spent (the budget of 120 LM call(s) is spent)",
            },
            {"model": "test/model-b", "optimizer": "mipro", "scores": {"dev": 0.5}},
        ],
    }


def test_html_is_self_contained_with_the_plot_table_prompts_and_usage(tmp_path: Path) -> None:
    path = report.write_html(sample_report(), tmp_path / "report.html")
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert 'id="trials-plot-0"' in html and "Plotly.newPlot" in html
    assert "trials-plot-1" not in html  # the second run had no trials
    assert "This optimizer ran no scored trials." in html
    assert len(html) > 1_000_000  # plotly.js is inline, not loaded from a CDN
    assert report.external_urls(html) == []
    assert not re.search(r"https?://", html, re.I)
    assert "<script src" not in html and "<link" not in html
    assert "Route &lt;b&gt;the&lt;/b&gt; ticket." in html  # report text is escaped
    assert "Ticket: {ticket}" in html
    assert "budget spent" in html and "0.0123" in html and "model-b" in html
    assert html.count('class="best"') == 1


def test_url_escapes_keep_their_meaning() -> None:
    html = report._without_url_text(
        '<p>see https://x.example/a</p><script>var s = "http://www.w3.org/2000/svg";</script>'
    )
    assert "https:&#47;&#47;x.example/a" in html
    script = html.split("<script>")[1].split("</script>")[0]
    literal = script.split("=", 1)[1].strip().rstrip(";")
    assert json.loads(literal) == "http://www.w3.org/2000/svg"  # what the browser's JS sees
    assert report.external_urls(html) == []
    assert report.external_urls('<img src="//cdn.example/x.png">') == ['src="//cdn.example/x.png']


def test_rendering_is_deterministic() -> None:
    assert report.render_html(sample_report()) == report.render_html(sample_report())


def test_json_report_is_strict_json(tmp_path: Path) -> None:
    path = report.write_json(sample_report(), tmp_path / "out" / "report.json")
    data = json.loads(
        path.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"non-JSON {c}")
    )
    assert data["runs"][0]["trials"][3]["score"] is None
    assert data["runs"][0]["scores"]["dev"] == 0.75
    assert not math.isnan(data["runs"][0]["trials"][0]["score"])


def test_a_single_run_dict_is_a_report() -> None:
    data = report.normalise_report({"model": "m", "trials": [{"score": 0.5}]})
    assert len(data["runs"]) == 1 and data["runs"][0]["trials"][0]["x"] == 0
    assert "trials-plot-0" in report.render_html({"model": "m", "trials": [{"score": 0.5}]})


def test_bad_shapes_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="must be a dict"):
        report.normalise_report(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="runs"):
        report.normalise_report({"runs": "x"})
    with pytest.raises(UsageError, match="trial 0"):
        report.normalise_report({"trials": [0.5]})


def test_missing_plotly_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    with pytest.raises(MissingExtraError, match=r"lmforge\[optimize\]"):
        report.write_html(sample_report(), tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
