"""The provider registry.

Adding a provider that litellm already speaks is one entry in ``PROVIDERS``; a provider with a
new transport is one module here exposing ``attempt(provider, messages, on_text)`` plus its
entry (see ``random_provider.py`` for the smallest example). Backends are imported lazily so
that ``llm-conductor list`` and the offline provider never pay for ``import litellm``.
"""

from __future__ import annotations

import importlib

from blocks.errors import UnknownProvider
from blocks.providers.base import Backend, Message, OnText, ProviderSpec, Segment

__all__ = [
    "LITELLM_KIND",
    "PROVIDERS",
    "Backend",
    "Message",
    "OnText",
    "ProviderSpec",
    "Segment",
    "get_spec",
    "load_backend",
]

#: The kind used for "any litellm model string", e.g. ``groq/llama-3.1-8b-instant``.
LITELLM_KIND = "litellm"

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "openai",
            "OpenAI API, or any OpenAI-compatible server via OPENAI_BASE_URL",
            backend="litellm",
            litellm_prefix="openai",
            default_model="gpt-4o-mini",
            parallelism=32,
            key_env="OPENAI_API_KEY",
            base_url_env="OPENAI_BASE_URL",
            streams=True,
        ),
        ProviderSpec(
            "openrouter",
            "OpenRouter: many vendors' models behind one key",
            backend="litellm",
            litellm_prefix="openrouter",
            default_model="openai/gpt-4o-mini",
            parallelism=32,
            key_env="OPENROUTER_API_KEY",
            base_url_env="OPENROUTER_BASE_URL",
            streams=True,
        ),
        ProviderSpec(
            "lmstudio",
            "LM Studio's local server",
            backend="litellm",
            litellm_prefix="lm_studio",
            default_model="local-model",
            parallelism=1,
            base_url_env="LMSTUDIO_BASE_URL",
            default_base_url="http://localhost:1234/v1",
            streams=True,
            start_hint="start LM Studio's server (`lms server start`, or Developer > Start Server)",
        ),
        ProviderSpec(
            "ollama",
            "Ollama's local server",
            backend="litellm",
            litellm_prefix="ollama_chat",
            default_model="llama3.2",
            parallelism=1,
            base_url_env="OLLAMA_BASE_URL",
            default_base_url="http://localhost:11434",
            streams=True,
            start_hint="start it with `ollama serve`",
        ),
        ProviderSpec(
            "anthropic",
            "Anthropic Messages API",
            backend="litellm",
            litellm_prefix="anthropic",
            default_model="claude-3-5-haiku-20241022",
            parallelism=32,
            key_env="ANTHROPIC_API_KEY",
            base_url_env="ANTHROPIC_BASE_URL",
            streams=True,
        ),
        ProviderSpec(
            "gemini",
            "Google Gemini API",
            backend="litellm",
            litellm_prefix="gemini",
            default_model="gemini-2.0-flash",
            parallelism=32,
            key_env="GEMINI_API_KEY",
            base_url_env="GEMINI_BASE_URL",
            streams=True,
        ),
        ProviderSpec(
            "claude-code",
            "the `claude` command-line tool (Claude Code), logged in",
            backend="claude",
            default_model="",
            parallelism=4,
            executable="claude",
        ),
        ProviderSpec(
            "openai-codex",
            "the `codex` command-line tool (OpenAI Codex), logged in",
            backend="codex",
            default_model="",  # codex's own configuration decides (gpt-5-codex is unknown to 0.171)
            parallelism=4,
            executable="codex",
        ),
        ProviderSpec(
            "random",
            "offline test provider: seeded, deterministic, no key, no network",
            backend="random",
            default_model="random",
            parallelism=32,
        ),
        ProviderSpec(
            LITELLM_KIND,
            "any litellm model string, e.g. groq/llama-3.1-8b-instant",
            backend="litellm",
            default_model="",
            parallelism=8,
            streams=True,
        ),
    )
}

_BACKEND_MODULES = {
    "litellm": "blocks.providers.litellm_backend",
    "claude": "blocks.providers.claude_cli",
    "codex": "blocks.providers.codex_cli",
    "random": "blocks.providers.random_provider",
}


def get_spec(kind: str) -> ProviderSpec:
    """The spec of a provider kind; raises ``UnknownProvider`` listing the valid ones."""
    try:
        return PROVIDERS[kind]
    except KeyError:
        valid = ", ".join(PROVIDERS)
        raise UnknownProvider(
            f"unknown provider {kind!r}; valid providers: {valid} "
            "(or a litellm model string such as groq/llama-3.1-8b-instant)"
        ) from None


def load_backend(spec: ProviderSpec) -> Backend:
    """Import the backend module of ``spec`` on first use, run its optional ``prepare()``
    (heavy imports, client set-up: outside any attempt's deadline) and return its
    ``attempt``."""
    module = importlib.import_module(_BACKEND_MODULES[spec.backend])
    if prepare := getattr(module, "prepare", None):
        prepare()
    return module.attempt  # type: ignore[no-any-return]
