"""Prefect Block types for llm-conductor: provider configuration and the client that calls it."""

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
    UnknownProvider,
    UsageError,
)
from blocks.llm_provider import REASONING_EFFORTS, LLMProvider, provider_from_env
from blocks.providers import PROVIDERS, ProviderSpec, get_spec
from blocks.result import Completion, Usage

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
    "UnknownProvider",
    "Usage",
    "UsageError",
    "get_spec",
    "provider_from_env",
]
