"""``ReAct``: a tool-use loop over Python functions, then an extract step for the outputs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import lmforge as lf
from lmforge.signature import Field, as_signature

from ._checks import check_count
from .chain_of_thought import ChainOfThought
from .tools import Tool, ToolArgumentError, render_observation

__all__ = ["ReAct"]

FINISH = "finish"
TRAJECTORY = "trajectory"
_DEFAULT_RESERVE = 1024  # output tokens kept free when no max_tokens is configured
_CHARS_PER_TOKEN = 3.5  # a deliberately rough estimate, biased toward overestimating


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: Any
    problem: str | None = None  # set when the reply itself was unusable


class ReAct(lf.Module):
    """Reason and act: the model calls tools until it chooses ``finish`` (or ``max_steps``
    turns pass), then an extract step produces the signature's outputs from the trajectory.

    ``ReAct("question -> answer", tools=[search, calculator], max_steps=6)``

    Tools are plain functions (sync or ``async def``) or :class:`Tool` objects; their
    argument schemas come from type hints and docstrings. A tool that raises, an unknown
    tool name and arguments that fail validation become observations the model sees on the
    next turn. When the model's profile declares ``native_tools``, tools are also sent as
    provider tool schemas and native tool calls are honoured; otherwise the model picks
    tools through the ``next_tool_name`` / ``next_tool_args`` output fields. The oldest
    steps are left out of the prompt when the trajectory would overflow the context window.

    The prediction holds the declared outputs (plus the extract step's ``reasoning``) and
    ``trajectory``: a list of ``{"thought", "tool", "args", "observation"}`` dicts.

    Tools are saved by import path (``package.module:function``) and re-imported on load.
    """

    def __init__(
        self,
        signature: str | lf.Signature | type[lf.Signature],
        tools: Iterable[Callable[..., Any] | Tool],
        *,
        max_steps: int = 8,
    ) -> None:
        max_steps = check_count(max_steps, "ReAct", "max_steps", least=1)
        if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
            raise lf.UsageError(
                f"ReAct(tools=...) must be a list of functions or Tool objects, got "
                f"{type(tools).__name__}; pass tools=[search, calculator] (tools=[] for none)"
            )
        self.signature = as_signature(signature)
        if TRAJECTORY in self.signature.field_names():
            raise lf.UsageError(f"ReAct uses the field name {TRAJECTORY!r}; rename that field")
        self.tools: dict[str, Tool] = {}
        for item in tools:
            tool = item if isinstance(item, Tool) else Tool(item)
            if tool.name == FINISH or tool.name in self.tools:
                raise lf.UsageError(
                    f"tool name {tool.name!r} is reserved or used twice; pass Tool(func, name=...)"
                )
            self.tools[tool.name] = tool
        self.max_steps = max_steps
        self.react = lf.Predict(_step_signature(self.signature, list(self.tools.values())))
        self.extract = ChainOfThought(
            self.signature.append(
                TRAJECTORY,
                lf.InputField(desc="the tool calls made so far and what they returned"),
                str,
            )
        )

    # -- the loop -----------------------------------------------------------------------

    def forward(self, **inputs: Any) -> lf.Prediction:
        self._check_inputs(inputs)
        lm = self.react.resolve_lm()
        steps: list[dict[str, Any]] = []
        for _ in range(self.max_steps):
            thought, calls = self._decide(inputs, steps, lm)
            if self._record(steps, thought, calls, [self._run(c) for c in _runnable(calls)]):
                break
        window = self._extract_window(inputs, steps)
        while True:
            try:
                return lf.Prediction({**self.extract(**window.inputs()), TRAJECTORY: steps})
            except lf.ContextWindowError as exc:
                window.shrink(exc)

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        self._check_inputs(inputs)
        lm = self.react.resolve_lm()
        steps: list[dict[str, Any]] = []
        for _ in range(self.max_steps):
            thought, calls = await self._adecide(inputs, steps, lm)
            observations = await _gather([self._arun(c) for c in _runnable(calls)])
            if self._record(steps, thought, calls, observations):
                break
        window = self._extract_window(inputs, steps)
        while True:
            try:
                extracted = await self.extract.acall(**window.inputs())
                return lf.Prediction({**extracted, TRAJECTORY: steps})
            except lf.ContextWindowError as exc:
                window.shrink(exc)

    def _decide(
        self, inputs: Mapping[str, Any], steps: Sequence[dict[str, Any]], lm: lf.LM
    ) -> tuple[str, list[_Call]]:
        window = self._step_window(inputs, steps, lm)
        while True:
            try:
                return _read_turn(self.react(**window.inputs()))
            except lf.ParseError as exc:
                return "", [_Call("", None, problem=self._unreadable(exc))]
            except lf.ContextWindowError as exc:
                window.shrink(exc)

    async def _adecide(
        self, inputs: Mapping[str, Any], steps: Sequence[dict[str, Any]], lm: lf.LM
    ) -> tuple[str, list[_Call]]:
        window = self._step_window(inputs, steps, lm)
        while True:
            try:
                return _read_turn(await self.react.acall(**window.inputs()))
            except lf.ParseError as exc:
                return "", [_Call("", None, problem=self._unreadable(exc))]
            except lf.ContextWindowError as exc:
                window.shrink(exc)

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        names = [f.name for f in self.signature.input_fields]
        if sorted(inputs) != sorted(names):
            raise lf.UsageError(
                f"ReAct got inputs {sorted(inputs)}; "
                f"call it with {', '.join(f'{n}=...' for n in names)}"
            )

    def _extract_window(
        self, inputs: Mapping[str, Any], steps: Sequence[dict[str, Any]]
    ) -> _Window:
        predictor = self.extract.predict
        return _Window(predictor, inputs, steps, predictor.resolve_lm())

    def _step_window(
        self, inputs: Mapping[str, Any], steps: Sequence[dict[str, Any]], lm: lf.LM
    ) -> _Window:
        extra = {"config": {"tools": self._tool_schemas()}} if lm.profile.native_tools else {}
        return _Window(self.react, inputs, steps, lm, extra)

    def _record(
        self,
        steps: list[dict[str, Any]],
        thought: str,
        calls: Sequence[_Call],
        observations: Sequence[str],
    ) -> bool:
        """Append this turn to ``steps``; True when the model chose to finish."""
        done = any(c.name == FINISH for c in calls if c.problem is None)
        results = iter(observations)
        for call in calls:
            if call.problem is not None:
                observation = call.problem
            elif call.name == FINISH:
                observation = "Completed."
            else:
                observation = next(results)
            steps.append(
                {
                    "thought": thought,
                    "tool": call.name or None,
                    "args": call.args,
                    "observation": observation,
                }
            )
            thought = ""
        return done

    # -- tools --------------------------------------------------------------------------

    def _lookup(self, call: _Call) -> tuple[Tool, dict[str, Any]] | str:
        tool = self.tools.get(call.name)
        if tool is None:
            return f"Error: there is no tool named {call.name!r}; available tools: {self._names()}."
        try:
            return tool, tool.validate(call.args)
        except ToolArgumentError as exc:
            expected = json.dumps(tool.parameters.get("properties", {}))
            return f"Error: {exc}. Expected arguments: {expected}"

    def _run(self, call: _Call) -> str:
        found = self._lookup(call)
        if isinstance(found, str):
            return found
        tool, args = found
        try:
            return render_observation(tool(**args))
        except Exception as exc:
            return _failure(tool, exc)

    async def _arun(self, call: _Call) -> str:
        found = self._lookup(call)
        if isinstance(found, str):
            return found
        tool, args = found
        try:
            return render_observation(await tool.acall(**args))
        except Exception as exc:
            return _failure(tool, exc)

    def _tool_schemas(self) -> tuple[dict[str, Any], ...]:
        finish = {
            "type": "function",
            "function": {
                "name": FINISH,
                "description": _FINISH_DESC,
                "parameters": {"type": "object", "properties": {}},
            },
        }
        return (*(t.schema() for t in self.tools.values()), finish)

    def _names(self) -> list[str]:
        return [*self.tools, FINISH]

    def _unreadable(self, exc: lf.ParseError) -> str:
        return (
            f"Error: your last reply could not be read: {exc}. Reply with `next_thought`, "
            f"`next_tool_name` (one of: {', '.join(self._names())}) and `next_tool_args` "
            "(a JSON object)."
        )

    # -- artifacts ----------------------------------------------------------------------

    def spec_config(self) -> dict[str, Any]:
        return {
            "signature": self.signature.to_json(),
            "tools": [
                {"ref": t.ref(), "name": t.name, "description": t.description}
                for t in self.tools.values()
            ],
            "max_steps": self.max_steps,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> ReAct:
        tools = [
            Tool.from_ref(str(t["ref"]), name=t.get("name"), description=t.get("description"))
            for t in config.get("tools") or []
        ]
        return cls(
            lf.Signature.from_json(config["signature"]),
            tools=tools,
            max_steps=int(config.get("max_steps", 8)),
        )

    def __repr__(self) -> str:
        return f"ReAct({self.signature!r}, tools={list(self.tools)}, max_steps={self.max_steps})"


_FINISH_DESC = "Call this when you have all the information needed to produce the outputs."


class _Window:
    """The trajectory as one predictor's prompt shows it: the oldest steps are left out
    while the prompt's rough token count would overflow the model's context window, and
    one more each time the provider still reports an overflow (:meth:`shrink`)."""

    def __init__(
        self,
        predictor: lf.Predict,
        inputs: Mapping[str, Any],
        steps: Sequence[dict[str, Any]],
        lm: lf.LM,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.predictor, self.base, self.steps, self.lm = predictor, inputs, steps, lm
        self.extra = dict(extra or {})
        self.drop = self.dropped = 0

    def inputs(self) -> dict[str, Any]:
        text, self.dropped = self._fit()
        return {**self.base, TRAJECTORY: text, **self.extra}

    def shrink(self, error: lf.ContextWindowError) -> None:
        if self.dropped >= len(self.steps):
            raise error
        self.drop = self.dropped + 1

    def _fit(self) -> tuple[str, int]:
        predictor, lm, steps = self.predictor, self.lm, self.steps
        reserve = predictor.config.get("max_tokens") or lm.defaults.get("max_tokens")
        budget = lm.profile.context_window - int(reserve or _DEFAULT_RESERVE)

        def overflow(text: str) -> int:
            prompt = predictor.format({**self.base, TRAJECTORY: text}, lm=lm).render()
            return int(len(prompt) / _CHARS_PER_TOKEN) - budget

        dropped = min(self.drop, len(steps))
        text = _render_trajectory(steps, dropped)
        excess = overflow(text)
        while excess > 0 and dropped < len(steps) - 1:
            dropped += 1
            text = _render_trajectory(steps, dropped)
            excess = overflow(text)
        if excess > 0 and steps and dropped == len(steps) - 1:
            last = dict(steps[-1])  # only the latest step is left and it is still too long
            keep = max(0, len(last["observation"]) - int(excess * _CHARS_PER_TOKEN) - 64)
            last["observation"] = (
                last["observation"][:keep] + " ... [cut to fit the context window]"
            )
            text = _render_trajectory([*steps[:-1], last], dropped)
        return text, dropped


def _step_signature(signature: lf.Signature, tools: Sequence[Tool]) -> lf.Signature:
    names = tuple([*(t.name for t in tools), FINISH])
    ins = ", ".join(f"`{f.name}`" for f in signature.input_fields)
    outs = ", ".join(f"`{f.name}`" for f in signature.output_fields)
    listing = "\n".join(f"({i}) {t.describe()}" for i, t in enumerate(tools, 1))
    listing += f"\n({len(tools) + 1}) {FINISH}: {_FINISH_DESC} Arguments: {{}}"
    instructions = (
        f"{signature.instructions}\n\n"
        f"You are an agent. Given {ins}, gather what is needed to produce {outs} by calling "
        "tools. In each turn write `next_thought` (your reasoning about the situation and the "
        "plan), then pick `next_tool_name` and its `next_tool_args` (a JSON object). Each "
        f"tool's result is added to `{TRAJECTORY}` as an observation. When you know enough, "
        f"pick `{FINISH}`.\n\nTools:\n{listing}"
    )
    fields = [
        *signature.input_fields,
        Field(TRAJECTORY, "input", str, "the tool calls made so far and what they returned"),
        Field("next_thought", "output", str, "what you know so far and what to do next"),
        Field("next_tool_name", "output", Literal[names], "the tool to call next"),
        Field("next_tool_args", "output", dict[str, Any], "the tool's arguments as a JSON object"),
    ]
    name = f"{signature.name}Step" if signature.name != "Signature" else "ReActStep"
    return lf.Signature(fields, instructions=instructions, name=name)


def _read_turn(prediction: lf.Prediction) -> tuple[str, list[_Call]]:
    thought = str(prediction.get("next_thought") or "")
    native = prediction.get("tool_calls")
    if native:
        return thought, [
            _Call(str(c.get("name") or ""), _arguments(c.get("arguments"))) for c in native
        ]
    return thought, [_Call(str(prediction["next_tool_name"]), prediction["next_tool_args"])]


def _arguments(raw: Any) -> Any:
    """Native tool-call arguments arrive as JSON text; keep the text when it is not JSON."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return raw


async def _gather(jobs: list[Any]) -> list[str]:
    import asyncio  # imported on first async use: plain calls never need it

    return list(await asyncio.gather(*jobs))


def _runnable(calls: Sequence[_Call]) -> list[_Call]:
    return [c for c in calls if c.problem is None and c.name != FINISH]


def _render_trajectory(steps: Sequence[Mapping[str, Any]], dropped: int) -> str:
    if not steps:
        return "(no steps yet)"
    lines: list[str] = []
    if dropped:
        lines.append(f"({dropped} earlier step(s) left out to fit the context window)")
    for number, step in enumerate(steps[dropped:], dropped + 1):
        if step["thought"]:
            lines.append(f"Step {number} thought: {step['thought']}")
        if step["tool"]:
            args = json.dumps(step["args"], ensure_ascii=False, default=str)
            lines.append(f"Step {number} tool: {step['tool']} {args}")
        lines.append(f"Step {number} observation: {step['observation']}")
    return "\n".join(lines)


def _failure(tool: Tool, exc: BaseException) -> str:
    return f"Error: {tool.name} raised {type(exc).__name__}: {exc}"
