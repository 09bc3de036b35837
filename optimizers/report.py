"""Compile reports: ``report.json`` and a self-contained ``report.html``.

A report is a plain JSON-safe dict::

    {
      "title": "lmforge compile report",          # optional
      "program": "examples/ticket.py:program",    # optional
      "lmforge_version": "0.1.0",                 # optional
      "runs": [                                   # one per compiled model
        {
          "model": "local/gemma-3-270m",
          "optimizer": "mipro",
          "config": {...},                        # optimizer configuration
          "scores": {"baseline": 0.4, "dev": 0.7, "test": 0.65},
          "trials": [{"trial": 1, "score": 0.5, "kind": "minibatch", "label": "..."}],
          "candidates": [{"candidate": "...", "score": 0.6, "best": True, ...}],
          "prompts": {"predictor": {"instructions": "...", "demos": 3, "prompt": "..."}},
          "usage": {"lm_calls": 120, "cache_hits": 4, "cost_usd": None, ...},
          "wall_s": 12.5,
          "stopped": None,                        # or why the run stopped early
          "errors": {"count": 2, "types": {"ValueError": 2}},  # examples that raised
          "lights": {...},                        # see lmforge.optimizers.reliability
        }
      ]
    }

A dict without ``"runs"`` is treated as a single run; ``"kind": "eval"`` (an ``lmforge
eval`` report) leaves out the trial and prompt sections. A trial is plotted at ``"trial"``
(else ``"number"``, else its position). Every key is optional; the HTML shows
what is there. The HTML embeds plotly.js inline and loads nothing from the network: it
contains no ``http://``/``https://`` text at all (URLs inside plotly's bundled code and in
report text are written with escapes that read the same at run time).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from lmforge._atomic import write_json_atomic, write_text_atomic
from lmforge.errors import MissingExtraError, UsageError
from markupsafe import Markup

from .reliability import lights_view

__all__ = ["external_urls", "normalise_report", "render_html", "write_html", "write_json"]

_SCHEME = re.compile(r"(?i)\b(https?|ftp|wss?):/{2}")
_SCRIPT = re.compile(r"(<script\b[^>]*>)(.*?)(</script>)", re.S | re.I)
_EXTERNAL = re.compile(
    r"""(?i)(\b(?:https?|ftp|wss?)://\S+|\b(?:src|href)\s*=\s*["']?//[^\s"'>]+)"""
)
_JS_SLOT = "/* plotly.js */"
_TRIAL_COLOURS = {"minibatch": "#7f8ea3", "full": "#1f6feb", "candidate": "#1f6feb"}


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON, atomically (non-finite numbers become ``null``)."""
    target = Path(path)
    write_json_atomic(target, _jsonable(report))
    return target


def write_html(report: Mapping[str, Any], path: str | Path) -> Path:
    """Render ``report`` to a self-contained HTML file, written atomically."""
    target = Path(path)
    html = render_html(report)
    write_text_atomic(target, html)
    return target


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML document with plotly.js inline and no external URLs."""
    go, plotly_js = _plotly()
    data = normalise_report(report)
    runs = []
    for index, run in enumerate(data["runs"]):
        runs.append(
            {
                **run,
                "plot": _trial_plot(go, run, index),
                "config_text": _pretty(run["config"]),
                "candidate_columns": _columns(run["candidates"]),
                "lights_view": lights_view(run["lights"]),
            }
        )
    score_names = sorted({name for run in runs for name in run["scores"]})
    html = _template().render(
        title=data["title"],
        program=data["program"],
        lmforge_version=data["lmforge_version"],
        runs=runs,
        kind=data["kind"],
        score_names=score_names,
        plotly_js=Markup(_JS_SLOT),
    )
    # plotly.js (4.8 MB) is made URL-free once per process and put in after the rest
    return _without_url_text(html).replace(_JS_SLOT, plotly_js, 1)


def normalise_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in defaults so every run has every key (raises ``UsageError`` on bad shapes)."""
    if not isinstance(report, Mapping):
        raise UsageError(f"a report must be a dict, got {type(report).__name__}")
    raw_runs = report.get("runs")
    if raw_runs is None:
        raw_runs = [report]
    if not isinstance(raw_runs, Sequence) or isinstance(raw_runs, str):
        raise UsageError("report['runs'] must be a list of run dicts")
    runs = [_normalise_run(run, i) for i, run in enumerate(raw_runs)]
    return {
        "title": str(report.get("title") or "lmforge compile report"),
        "program": str(report.get("program") or ""),
        "lmforge_version": str(report.get("lmforge_version") or ""),
        "kind": "eval" if report.get("kind") == "eval" else "compile",
        "runs": runs,
    }


def external_urls(html: str) -> list[str]:
    """Every absolute or protocol-relative URL written literally in ``html``."""
    return [match.group(0) for match in _EXTERNAL.finditer(html)]


# -- internals ------------------------------------------------------------------------------


def _normalise_run(run: Any, index: int) -> dict[str, Any]:
    if not isinstance(run, Mapping):
        raise UsageError(f"report run {index} must be a dict, got {type(run).__name__}")
    trials = []
    for number, trial in enumerate(run.get("trials") or []):
        if not isinstance(trial, Mapping):
            raise UsageError(f"report run {index}: trial {number} must be a dict with a 'score'")
        trials.append(
            {
                **trial,
                "x": trial.get("trial", trial.get("number", number)),
                "kind": trial.get("kind") or "trial",
            }
        )
    prompts = run.get("prompts") or {}
    scores: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for key, value in (run.get("scores") or {}).items():
        is_score = value is None or (
            isinstance(value, float) and not str(key).endswith("_failures")
        )
        (scores if is_score else details)[str(key)] = value
    return {
        "model": str(run.get("model") or ""),
        "optimizer": str(run.get("optimizer") or ""),
        "config": dict(run.get("config") or {}),
        "scores": scores,
        "score_details": details,
        "trials": trials,
        "candidates": [dict(c) for c in run.get("candidates") or []],
        "prompts": {
            str(k): dict(v) if isinstance(v, Mapping) else {"prompt": str(v)}
            for k, v in prompts.items()
        },
        "usage": dict(run.get("usage") or {}),
        "wall_s": run.get("wall_s"),
        "stopped": run.get("stopped"),
        "errors": dict(run.get("errors") or {}),
        "lights": run.get("lights") if isinstance(run.get("lights"), Mapping) else None,
    }


def _trial_plot(go: Any, run: Mapping[str, Any], index: int) -> Markup | None:
    trials = [t for t in run["trials"] if _finite(t.get("score"))]
    if not trials:
        return None
    fig = go.Figure()
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for trial in trials:
        kinds.setdefault(str(trial["kind"]), []).append(trial)
    # minibatch scores first, so full evaluations are drawn on top of them
    for kind in sorted(kinds, key=lambda k: k in ("full", "candidate")):
        group = kinds[kind]
        full = kind in ("full", "candidate")
        fig.add_trace(
            go.Scatter(
                x=[t["x"] for t in group],
                y=[float(t["score"]) for t in group],
                mode="markers",
                name=f"{kind} score",
                text=[str(t.get("label") or "") for t in group],
                hovertemplate="trial %{x}<br>score %{y:.3f}<br>%{text}<extra></extra>",
                marker={
                    "size": 12 if full else 7,
                    "symbol": "diamond" if full else "circle",
                    "color": _TRIAL_COLOURS.get(kind),
                },
            )
        )
    best_pool = kinds.get("full") or kinds.get("candidate") or trials
    ordered = sorted(best_pool, key=lambda t: t["x"])
    xs = [t["x"] for t in ordered]
    best: list[float] = []
    for trial in ordered:
        best.append(max(float(trial["score"]), best[-1]) if best else float(trial["score"]))
    last = max(t["x"] for t in trials)
    if xs and last != xs[-1]:
        xs, best = [*xs, last], [*best, best[-1]]
    fig.add_trace(
        go.Scatter(
            x=xs, y=best, mode="lines", name="best so far", line={"shape": "hv", "color": "#2da44e"}
        )
    )
    baseline = run["scores"].get("baseline")
    if _finite(baseline):
        fig.add_hline(
            y=float(baseline),
            line_dash="dot",
            line_color="#9a6700",
            annotation_text="baseline",
            annotation_position="bottom right",
        )
    fig.update_layout(
        height=380,
        margin={"l": 50, "r": 20, "t": 30, "b": 45},
        template="plotly_white",
        xaxis_title="trial",
        yaxis_title="score",
        legend={"orientation": "h", "y": 1.12},
    )
    html = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"trials-plot-{index}",
        default_height=380,
        config={
            "displaylogo": False,
            "responsive": True,
            "showSendToCloud": False,
        },
    )
    return Markup(html)


def _columns(candidates: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in candidates:
        for key in row:
            if key != "best" and key not in columns:
                columns.append(key)
    return columns


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "—"
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _num(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_jsonable(value), ensure_ascii=False, sort_keys=True)
    return "" if value is None else str(value)


def _pretty(config: Mapping[str, Any]) -> str:
    return json.dumps(_jsonable(config), indent=2, ensure_ascii=False, sort_keys=True)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _without_url_text(html: str) -> str:
    """Write every ``scheme://`` so no URL text remains, without changing what it means.

    Inside ``<script>`` a JavaScript (or JSON) string reads ``\\/`` as ``/``; elsewhere the
    HTML entity ``&#47;`` displays as ``/``. Only text is rewritten: the template itself
    has no ``src``/``href`` attributes.
    """
    out: list[str] = []
    last = 0
    for match in _SCRIPT.finditer(html):
        out.append(_SCHEME.sub(lambda m: f"{m.group(1)}:&#47;&#47;", html[last : match.start()]))
        body = _SCHEME.sub(lambda m: f"{m.group(1)}:\\/\\/", match.group(2))
        out.append(f"{match.group(1)}{body}{match.group(3)}")
        last = match.end()
    out.append(_SCHEME.sub(lambda m: f"{m.group(1)}:&#47;&#47;", html[last:]))
    return "".join(out)


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["num"] = _num
    env.filters["cell"] = _cell
    source = (resources.files("lmforge.optimizers") / "templates" / "report.html.jinja").read_text(
        "utf-8"
    )
    return env.from_string(source)


def _plotly() -> tuple[Any, str]:
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingExtraError("plotly", "optimize", "the HTML compile report") from None
    return go, _plotly_js(get_plotlyjs)


@functools.lru_cache(maxsize=1)
def _plotly_js(get_plotlyjs: Any) -> str:
    # "</script" inside the bundle would end the inline script element early.
    code = str(get_plotlyjs()).replace("</script", "<\\/script")
    return _SCHEME.sub(lambda m: f"{m.group(1)}:\\/\\/", code)
