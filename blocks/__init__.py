"""Prefect Block types for llm-conductor: provider configuration and the client that calls it."""

from typing import TYPE_CHECKING, Any

from blocks import _prefect_env  # noqa: F401  (must run before prefect is imported)
from blocks.errors import (
    AuthenticationFailed,
    BadRequest,
    CliProviderError,
    ConductorError,
    EmptyResponse,
    InvalidOutput,
    NeedsKey,
    PromptFileError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Truncated,
    UnknownProvider,
    UsageError,
)
from blocks.providers import PROVIDERS, ProviderSpec, get_spec
from blocks.result import Completion, Usage

if TYPE_CHECKING:
    from blocks.llm_provider import REASONING_EFFORTS, LLMProvider, provider_from_env

_LAZY = {"REASONING_EFFORTS", "LLMProvider", "provider_from_env"}


def __getattr__(name: str) -> Any:
    # The block imports Prefect (about 1 s); errors and specs should not pay for it.
    if name in _LAZY:
        from blocks import llm_provider

        return getattr(llm_provider, name)
    raise AttributeError(f"module 'blocks' has no attribute {name!r}")


__all__ = [
    "PROVIDERS",
    "REASONING_EFFORTS",
    "AuthenticationFailed",
    "BadRequest",
    "CliProviderError",
    "Completion",
    "ConductorError",
    "EmptyResponse",
    "InvalidOutput",
    "LLMProvider",
    "NeedsKey",
    "PromptFileError",
    "ProviderError",
    "ProviderSpec",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "Truncated",
    "UnknownProvider",
    "Usage",
    "UsageError",
    "get_spec",
    "provider_from_env",
]
