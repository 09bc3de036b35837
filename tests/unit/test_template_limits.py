"""User template overrides run in a sandbox that bounds memory and time, and cannot load
other templates: a hostile template is a one-line error, at load time where possible."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.adapters import adapter_from_config
from lmforge.artifact import _digest

SIG = lf.Signature.parse("question -> answer")

# Each would exhaust memory or hang without the limits (checked before they were added).
ATTACKS = {
    "repeat": "{{ 'a' * 2000000000 }}",
    "nested_range": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "power": "{{ 9 ** (9 ** 9) }}",
    "lipsum": "{{ lipsum(n=10000000) }}",
    "big_range": "{{ range(10 ** 9) | list | length }}",
    "doubling": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    ),
    "macro_doubling": (
        "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}"
        "{% endif %}{% endmacro %}{{ f('a', 60) }}"
    ),
    "method_width": "{{ 'a'.center(10 ** 10) }}",
    "filter_width": "{{ 'a' | center(10 ** 10) }}",
    "squaring_replace": "{% set s = 'a' * 1000 %}{{ s.replace('a', s).replace('a', s) }}",
    "format_width": "{{ '{:>9999999999}'.format(1) }}",
    "printf_width": "{{ '%9999999999d' % 1 }}",
    "loop_over_text": (
        "{% set s = 'a' * 5000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    ),
    "output": "{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}",
    "set_block_doubling": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}"
    ),
    "macro_output_doubling": (
        "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{% set ns = namespace(s='ab') %}"
        "{% for i in range(60) %}{% set ns.s = twice(ns.s) %}{% endfor %}"
    ),
    # Shared parts: str() and == of [x, x] walk x twice, so 60 steps mean 2**60 items.
    "shared_list_compare": (
        "{% set ns = namespace(s=[1], t=[1]) %}{% for i in range(60) %}"
        "{% set ns.s = [ns.s, ns.s] %}{% set ns.t = [ns.t, ns.t] %}{% endfor %}"
        "{{ ns.s == ns.t }}"
    ),
    "shared_list_repeat": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(60) %}"
        "{% set ns.s = [ns.s] * 2 %}{% endfor %}{{ ns.s }}"
    ),
    "shared_dict_call": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(60) %}"
        "{% set ns.s = dict(a=ns.s, b=ns.s) %}{% endfor %}{{ ns.s | tojson }}"
    ),
}
LOADS = {
    "include": "{% include 'secrets.txt' %}",
    "extends": "{% extends 'base.jinja' %}",
    "import": "{% import 'macros.jinja' as m %}",
    "from_import": "{% from 'macros.jinja' import f %}",
}


def _refused(template: str) -> lf.UsageError:
    started = time.perf_counter()
    with pytest.raises(lf.UsageError) as info:
        lf.ChatAdapter(templates={"user": template})
    assert time.perf_counter() - started < 1.0
    message = str(info.value)
    assert "\n" not in message and message.startswith("template 'user' is refused: ")
    return info.value


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_resource_exhausting_template_is_refused_when_the_adapter_is_built(name: str) -> None:
    _refused(ATTACKS[name])


@pytest.mark.parametrize("name", sorted(LOADS))
def test_templates_cannot_load_other_templates(name: str) -> None:
    error = _refused(LOADS[name])
    assert "cannot load other templates" in str(error)


def test_big_range_names_the_limit() -> None:
    assert "range() of 1000000000 items is too large" in str(_refused(ATTACKS["big_range"]))


def test_limits_hold_on_values_the_load_time_check_did_not_see() -> None:
    adapter = lf.ChatAdapter(
        templates={
            "user": "{% for name, value in fields %}"
            "{% if value == 'boom' %}{{ value * 10 ** 9 }}{% else %}{{ value }}{% endif %}"
            "{% endfor %}"
        }
    )
    assert adapter.format(SIG, [], {"question": "calm"}).render().endswith("calm")
    started = time.perf_counter()
    with pytest.raises(lf.UsageError, match="is refused: '\\*' would build") as info:
        adapter.format(SIG, [], {"question": "boom"})
    assert time.perf_counter() - started < 1.0 and "\n" not in str(info.value)


def test_other_render_failures_are_one_line_usage_errors() -> None:
    adapter = lf.ChatAdapter(templates={"user": "{{ 1 // (fields | length - 1) }}"})
    with pytest.raises(lf.UsageError, match="failed to render: integer division") as info:
        adapter.format(SIG, [], {"question": "q"})
    assert "\n" not in str(info.value)


def test_ordinary_template_features_still_render() -> None:
    template = (
        "{% macro field(name, value) %}{{ name | upper }}: {{ value }}{% endmacro %}"
        "{% set ns = namespace(n=0) %}"
        "{% for name, value in fields %}{% set ns.n = ns.n + 1 %}"
        "{{ field(name, value) }} ({{ loop.index }}/{{ loop.length }})\n{% endfor %}"
        "{{ range(3) | map('string') | join(', ') }} | {{ 'x' ~ ns.n ~ 'y' }} | "
        "{{ '%-5s|' % 'ab' }}{{ '{:>4}'.format(7) }} | {{ 'ab' | center(6) }} | "
        "{{ [1, 2, 3] | sum }} | {{ 2 ** 10 }} | {{ 'ab' * 3 }} | "
        "{{ 'a-b' | replace('-', '+') }} | {{ 'a\nb' | indent(2) }}"
    )
    adapter = lf.ChatAdapter(templates={"user": template})
    messages = adapter.format(SIG, [], {"question": "Why?"}).messages
    assert messages is not None
    assert messages[-1]["content"] == (
        "QUESTION: Why? (1/1)\n"
        "0, 1, 2 | x1y | ab   |   7 |   ab   | 6 | 1024 | ababab | a+b | a\n  b"
    )


def test_adapter_config_with_a_hostile_template_is_a_usage_error() -> None:
    with pytest.raises(lf.UsageError, match="is refused"):
        adapter_from_config({"type": "json", "templates": {"system": ATTACKS["power"]}})


def _artifact_with_template(tmp_path: Path, template: str) -> Path:
    program = lf.Predict(
        SIG, adapter=lf.ChatAdapter(templates={"user": "{{ fields }}"}), lm=lf.LM("openai/x")
    )
    path = tmp_path / "program.json"
    program.save(path)
    data = json.loads(path.read_text())
    data["predictors"]["self"]["adapter"]["templates"]["user"] = template
    data["sha256"] = _digest({k: v for k, v in data.items() if k != "sha256"})
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", ["repeat", "nested_range", "power", "lipsum"])
def test_artifact_with_a_hostile_template_is_refused_at_load(tmp_path: Path, name: str) -> None:
    path = _artifact_with_template(tmp_path, ATTACKS[name])
    started = time.perf_counter()
    with pytest.raises(lf.ArtifactError, match="is refused") as info:
        lf.load(path)
    assert time.perf_counter() - started < 1.0 and "\n" not in str(info.value)


def test_export_of_an_artifact_with_a_hostile_template_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.main import app
    from typer.testing import CliRunner

    path = _artifact_with_template(tmp_path, LOADS["include"])
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app, ["export", str(path), "-t", "managed", "-o", str(out), "--model", "openai/x"]
    )
    assert result.exit_code != 0
    assert "cannot load other templates" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert not out.exists()
