"""Tool: schemas from type hints and docstrings, argument validation, sync/async calls."""

from __future__ import annotations

import asyncio
from typing import Literal

import lmforge as lf
import pydantic
import pytest
from lmforge.modules import Tool, ToolArgumentError


class Address(pydantic.BaseModel):
    city: str
    zip_code: str


def ship(
    order_id: int, address: Address, speed: Literal["standard", "express"] = "standard"
) -> str:
    """Ship an order to an address.

    Longer notes that are not part of the summary.

    Args:
        order_id: the order's number
        address: where to send it; the
            city and zip code
        speed: how fast to ship

    Returns:
        a tracking code
    """
    return f"{order_id}:{address.city}:{speed}"


async def slow_echo(text: str) -> str:
    """:param text: what to echo back"""
    await asyncio.sleep(0)
    return text


def test_schema_comes_from_type_hints_and_docstring() -> None:
    tool = Tool(ship)
    function = tool.schema()["function"]
    assert function["name"] == "ship"
    assert function["description"] == "Ship an order to an address."
    params = function["parameters"]
    assert params["required"] == ["order_id", "address"]
    assert params["properties"]["order_id"] == {
        "type": "integer",
        "description": "the order's number",
    }
    assert params["properties"]["speed"]["enum"] == ["standard", "express"]
    assert (
        params["properties"]["address"]["description"] == "where to send it; the city and zip code"
    )
    assert "Address" in params["$defs"]
    assert "title" not in params["properties"]["order_id"]


def test_sphinx_style_parameter_docs_and_overrides() -> None:
    tool = Tool(slow_echo, name="echo", description="Repeat text.")
    assert tool.name == "echo" and tool.description == "Repeat text."
    assert tool.parameters["properties"]["text"]["description"] == "what to echo back"
    assert tool.is_async


def test_validation_converts_and_rejects_arguments() -> None:
    tool = Tool(ship)
    args = tool.validate('{"order_id": "12", "address": {"city": "Oslo", "zip_code": "0150"}}')
    assert args["order_id"] == 12 and isinstance(args["address"], Address)
    assert args["speed"] == "standard"
    assert tool(**args) == "12:Oslo:standard"
    with pytest.raises(ToolArgumentError, match="speed"):
        tool.validate({"order_id": 1, "address": {"city": "a", "zip_code": "b"}, "speed": "warp"})
    with pytest.raises(ToolArgumentError, match="not a JSON object"):
        tool.validate("{not json")
    with pytest.raises(ToolArgumentError, match="must be a JSON object"):
        tool.validate([1, 2])


def test_parameters_named_like_pydantic_attributes_work() -> None:
    def lookup(schema: str, copy: int = 1) -> str:
        """Look something up."""
        return schema * copy

    tool = Tool(lookup)
    assert sorted(tool.parameters["properties"]) == ["copy", "schema"]
    assert tool(**tool.validate({"schema": "ab", "copy": 2})) == "abab"


async def test_async_tool_from_sync_and_async_code() -> None:
    tool = Tool(slow_echo)
    assert await tool.acall(text="hi") == "hi"
    assert tool(text="from a running loop") == "from a running loop"
    assert (
        await Tool(ship).acall(order_id=1, address=Address(city="x", zip_code="y"))
        == "1:x:standard"
    )


def test_sync_call_of_an_async_tool_without_a_loop() -> None:
    assert Tool(slow_echo)(text="plain") == "plain"


def test_bad_tools_are_rejected() -> None:
    def kwargs_only(**options: str) -> str:
        return ""

    with pytest.raises(lf.UsageError, match="kwargs"):
        Tool(kwargs_only)
    with pytest.raises(lf.UsageError, match="tool name"):
        Tool(ship, name="has space")
    with pytest.raises(lf.UsageError, match="must be a function"):
        Tool("ship")  # type: ignore[arg-type]


def test_tools_are_referenced_by_import_path() -> None:
    assert Tool(ship).ref() == f"{__name__}:ship"
    rebuilt = Tool.from_ref(f"{__name__}:ship")
    assert rebuilt.func is ship
    with pytest.raises(lf.UsageError, match="cannot import"):
        Tool.from_ref("no_such_module_here:ship")
