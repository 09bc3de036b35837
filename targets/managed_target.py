"""The managed target: the program server calling a provider model through litellm."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.errors import UsageError
from lmforge.lm.profiles import profile_for

from .templating import k8s_name

if TYPE_CHECKING:
    from .export import ExportOptions

__all__ = ["PROVIDER_KEYS", "managed_backend"]

PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
}


def managed_backend(
    options: ExportOptions, context: dict[str, Any], source_model: str
) -> dict[str, Any]:
    model = options.model or source_model
    if model.startswith("local/"):
        raise UsageError(
            "the managed target needs a provider model: "
            "pass --model openai/gpt-4o-mini (or an ft: id)"
        )
    provider = (
        model.split("/", 1)[0] if "/" in model else ("openai" if model.startswith("ft:") else model)
    )
    key_env = options.api_key_env or PROVIDER_KEYS.get(provider)
    if key_env is None:
        raise UsageError(
            f"no known API key variable for provider {provider!r}; pass --api-key-env NAME"
        )
    fallback_env = None
    if options.fallback_model:
        fallback_provider = options.fallback_model.split("/", 1)[0]
        fallback_env = PROVIDER_KEYS.get(fallback_provider, key_env)
    hints = {"anthropic": "anthropic", "openai": "openai"}.get(
        profile_for(model).prompt_cache or ""
    )
    context.update(
        model=model,
        api_key_env=key_env,
        fallback_key_env=fallback_env or "",
        api_key_secret_key=k8s_name(key_env),
        cache_hints=hints,
    )
    return {
        "kind": "litellm",
        "model": model,
        "api_key_env": key_env,
        "api_base_env": "LMFORGE_PROVIDER_API_BASE",
        "fallback_model": options.fallback_model,
        "fallback_api_key_env": fallback_env,
        "fallback_api_base_env": "LMFORGE_FALLBACK_API_BASE" if options.fallback_model else None,
        "cache_hints": hints,
    }
