"""Rendering of bundle files from the jinja2 templates in ``targets/templates/``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jinja2

__all__ = ["environment", "k8s_name", "monitoring_files"]


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: (
                resources.files("lmforge.targets")
                .joinpath("templates", *name.split("/"))
                .read_text()
            )
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, Dockerfile and Markdown, not HTML
    )


def k8s_name(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50] or "program"


def monitoring_files(env: jinja2.Environment, context: Mapping[str, Any]) -> dict[str, bytes]:
    """The compose bundle's Prometheus config and Grafana provisioning (datasource,
    dashboard provider, dashboard JSON), at their bundle paths."""
    folder = resources.files("lmforge.targets").joinpath("templates", "monitoring")
    # The dashboard is copied as is: its legends use Grafana's own {{label}} syntax.
    return {
        "monitoring/prometheus.yml": env.get_template("monitoring/prometheus.yml.j2")
        .render(context)
        .encode(),
        "monitoring/grafana/provisioning/datasources/prometheus.yaml": folder.joinpath(
            "datasource.yaml"
        ).read_bytes(),
        "monitoring/grafana/provisioning/dashboards/lmforge.yaml": folder.joinpath(
            "dashboards.yaml"
        ).read_bytes(),
        "monitoring/grafana/dashboards/lmforge.json": folder.joinpath(
            "dashboard.json"
        ).read_bytes(),
    }
