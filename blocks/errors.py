"""Errors meant for the user to read.

Every error llm-conductor raises on purpose derives from ``ConductorError``; its message is
one line that says what went wrong and, where possible, what to do about it::

    ConductorError
    ├── UsageError                 bad flags, env or input: exit code 2, no provider call
    │   ├── UnknownProvider        also a ValueError, as the seed's get_provider raised
    │   └── NeedsKey               names the variable to set
    ├── ProviderError              one LLM call failed (.provider, .status_code, .retryable)
    │   ├── RateLimited            429; may carry .retry_after seconds
    │   ├── ProviderTimeout        no answer within the block's timeout
    │   ├── ProviderUnavailable    5xx, refused or dropped connection, garbage body
    │   ├── EmptyResponse          the model answered nothing (retried on its own budget)
    │   ├── AuthenticationFailed   401/403, "not logged in"
    │   ├── BadRequest             any other 4xx: never retried
    │   └── CliProviderError       the claude/codex executable failed (.exit_code, .stderr_tail)
    ├── PromptFileError            a prompt file that cannot be used
    └── InvalidOutput              the answer does not fit the output format (e.g. not JSON)
        └── Truncated              still cut off by the token limit after the continuations
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blocks.result import Completion

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "CliProviderError",
    "ConductorError",
    "EmptyResponse",
    "InvalidOutput",
    "NeedsKey",
    "PromptFileError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "Truncated",
    "UnknownProvider",
    "UsageError",
]


class ConductorError(Exception):
    """Root of every error llm-conductor raises for the user to see."""


class UsageError(ConductorError):
    """Bad flags, environment or input; nothing was sent to a provider."""


class UnknownProvider(UsageError, ValueError):
    """The provider name is not registered and is not a litellm model string.

    Also a ``ValueError``: scripts written for the seed llm-conductor catch that around
    ``get_provider``.
    """


class NeedsKey(UsageError):
    """A provider needs an API key that is not set."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"provider {provider!r} needs an API key: set {env_var} (or pass api_key to the block)"
        )


class ProviderError(ConductorError):
    """One call to an LLM provider failed."""

    #: Whether the one retry loop may try the call again.
    retryable: bool = False
    #: Attempts the retry loop made before giving up (set by ``blocks.retry.retry_call``).
    attempts: int = 1

    def __init__(self, message: str, *, provider: str = "", status_code: int | None = None) -> None:
        self.provider = provider
        self.status_code = status_code
        super().__init__(message)

    def __str__(self) -> str:
        message = super().__str__()
        prefix = (
            f"{self.provider}: " if self.provider and not message.startswith(self.provider) else ""
        )
        return f"{prefix}{message}"


class RateLimited(ProviderError):
    """HTTP 429 or the provider's equivalent; honours Retry-After when given."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.retry_after = retry_after


class ProviderTimeout(ProviderError):
    """No complete answer within the block's timeout."""

    retryable = True


class ProviderUnavailable(ProviderError):
    """A 5xx answer, a refused or dropped connection, or a body that is not the API's."""

    retryable = True


class EmptyResponse(ProviderError):
    """The model returned no text; retried up to LITELLM_APP_RETRIES times."""

    retryable = True


class AuthenticationFailed(ProviderError):
    """The provider rejected the credentials (401/403, or a CLI that is not logged in)."""


class BadRequest(ProviderError):
    """Any other 4xx: the request itself is wrong, so retrying cannot help."""


class CliProviderError(ProviderError):
    """The claude or codex executable failed."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        exit_code: int | None = None,
        stderr_tail: str = "",
        retryable: bool = False,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.retryable = retryable


class PromptFileError(ConductorError):
    """A prompt file that cannot be used (empty, not UTF-8, outside the input folder...)."""


class InvalidOutput(ConductorError):
    """The model's answer does not fit the requested output format.

    ``completion`` is the answer received, when there was one: it was paid for, so its text is
    kept (``answer``) and its tokens are counted like any other.
    """

    # Keyword defaults keep it picklable (Prefect stores a failed task's exception).
    def __init__(
        self, message: str, *, answer: str | None = None, completion: Completion | None = None
    ) -> None:
        super().__init__(message)
        self.completion = completion
        self.answer = answer if answer is not None or completion is None else completion.text


class Truncated(InvalidOutput):
    """The answer still ended at the token limit (``finish_reason=length``) after the
    continuations, or a continuation repeated what came before: it is not the whole answer."""
