"""Model profiles: what a model can do, declared as data rather than guessed per call.

The adapter a predictor uses by default, whether structured output or native tool calls
are sent, and how long prompts may be all come from the profile of the LM's model.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Literal

__all__ = ["BASE_MODEL", "LOCAL_GEMMA_3_270M", "ModelProfile", "profile_for"]

StructuredOutput = Literal["json_schema", "json_object", "grammar", "none"]
AdapterName = Literal["chat", "json", "completion"]


@dataclasses.dataclass(frozen=True, slots=True)
class ModelProfile:
    """Declared capabilities of a model.

    Attributes:
        chat_template: the model understands chat messages (instruction-tuned).
        structured_output: how output can be constrained: provider JSON-schema
            ``response_format``, JSON mode only, a decoding grammar, or nothing. The
            JSONAdapter sends no more than this allows (``none``: the prompt alone asks
            for JSON); a provider that refuses a response_format lowers it on that LM.
        context_window: prompt plus output tokens the model accepts.
        native_tools: the provider accepts OpenAI-style ``tools`` and returns tool calls.
        default_adapter: the adapter predictors use when none is configured.
        prompt_cache: the provider's prompt-caching style, if it has one.
        vision: the model reads images (``lf.Image`` inputs); text-only models refuse them.
    """

    chat_template: bool = True
    structured_output: StructuredOutput = "json_schema"
    context_window: int = 8192
    native_tools: bool = False
    default_adapter: AdapterName = "chat"
    prompt_cache: Literal["anthropic", "openai", "prefix"] | None = None
    vision: bool = False


BASE_MODEL = ModelProfile(
    chat_template=False,
    structured_output="grammar",
    context_window=32768,
    default_adapter="completion",
    prompt_cache="prefix",
)

#: The embedded model: Gemma 3 270M *base* (its GGUF has no ``tokenizer.chat_template``),
#: trained with a 32k context; run by llama.cpp, so outputs are constrained by grammars.
LOCAL_GEMMA_3_270M = ModelProfile(
    chat_template=False,
    structured_output="grammar",
    context_window=32768,
    native_tools=False,
    default_adapter="completion",
    prompt_cache="prefix",
)

# Exact model names first, then provider prefixes. Entries are data: extend by passing
# ``profile=`` to ``lf.LM`` rather than editing this table. A ``local/<file.gguf>`` is
# taken to be a base model; pass ``profile=`` (and ``model_type="chat"``) for chat GGUFs.
_EXACT: dict[str, ModelProfile] = {
    "local/gemma-3-270m": LOCAL_GEMMA_3_270M,
}
_PREFIXES: tuple[tuple[str, ModelProfile], ...] = (
    ("local/", BASE_MODEL),
    ("openai/", ModelProfile(context_window=128000, native_tools=True, prompt_cache="openai")),
    ("azure/", ModelProfile(context_window=128000, native_tools=True, prompt_cache="openai")),
    (
        "anthropic/",
        ModelProfile(context_window=200000, native_tools=True, prompt_cache="anthropic"),
    ),
    ("hosted_vllm/", ModelProfile(context_window=8192, prompt_cache="prefix")),
    ("ollama/", ModelProfile(structured_output="json_object", context_window=8192)),
    ("ollama_chat/", ModelProfile(structured_output="json_object", context_window=8192)),
)
_DEFAULT = ModelProfile()
# Chat model families that read images, matched against the name after the provider.
_VISION_FAMILIES = ("gpt-4o*", "gpt-4.1*", "claude-3*", "claude-*-4*", "gemini*")
_TEXT_MODE = ModelProfile(
    chat_template=False, structured_output="none", default_adapter="completion"
)


def profile_for(model: str, model_type: Literal["chat", "text"] = "chat") -> ModelProfile:
    """The declared profile of ``model``; text-completion models use the completion adapter."""
    profile = _table_profile(model, model_type)
    if model_type == "chat" and profile.chat_template and _is_vision_family(model):
        return dataclasses.replace(profile, vision=True)
    return profile


def _table_profile(model: str, model_type: Literal["chat", "text"]) -> ModelProfile:
    if model in _EXACT:
        return _EXACT[model]
    for prefix, profile in _PREFIXES:
        if model.startswith(prefix):
            if model_type == "text" and profile.chat_template:
                return dataclasses.replace(
                    profile, chat_template=False, default_adapter="completion"
                )
            return profile
    return _TEXT_MODE if model_type == "text" else _DEFAULT


def _is_vision_family(model: str) -> bool:
    if model.startswith("local/"):
        return False
    name = model.rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _VISION_FAMILIES)
