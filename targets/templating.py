"""Rendering of bundle files from the jinja2 templates in ``targets/templates/``."""

from __future__ import annotations

import re
from importlib import resources

import jinja2

__all__ = ["environment", "k8s_name"]


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
