"""``LLMProvider``: the Prefect Block that configures one provider and performs completions."""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks import tracing
from blocks.errors import EmptyResponse, NeedsKey, ProviderError, ProviderTimeout, UsageError
from blocks.providers import LITELLM_KIND, PROVIDERS, ProviderSpec, get_spec, load_backend
from blocks.providers.base import Message, OnText, Segment
from blocks.result import Completion, Usage
from blocks.retry import RetryPolicy, retry_call

__all__ = ["REASONING_EFFORTS", "LLMProvider", "provider_from_env"]

ReasoningEffort = Literal["minimal", "low", "medium", "high"]
REASONING_EFFORTS: tuple[str, ...] = ("minimal", "low", "medium", "high")

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue exactly where it stopped, without repeating "
    "anything and without any preamble."
)

DEFAULT_TIMEOUT = 120.0


class LLMProvider(Block):
    """One LLM provider: which one, which model, how to reach it and how hard to push it.

    Usable without any Prefect server (construct it in code or with ``provider_from_env``)
    and loadable by name when one exists (``LLMProvider.load("my-openai")``).

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider

        @flow
        async def ask() -> str:
            provider = LLMProvider(kind="random", options={"seed": 7})
            completion = await provider.acomplete("Name three rivers")
            return completion.text
        ```
    """

    _block_type_name = "LLM Provider"
    _block_type_slug = "llm-provider"
    _description = "An LLM provider for llm-conductor: kind, model, endpoint, key and limits."

    kind: str = Field(
        default="openai",
        description=f"Provider kind: one of {', '.join(PROVIDERS)}.",
    )
    model: str | None = Field(
        default=None, description="Model name; the kind's default when empty."
    )
    api_base: str | None = Field(
        default=None, description="Endpoint URL; the kind's default (or its env var) when empty."
    )
    api_key: SecretStr | None = Field(
        default=None, description="API key; read from the kind's env var when empty."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, description="Per segment.")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, description="Seconds per attempt, CLI providers included."
    )
    retries: int = Field(
        default=3, ge=0, description="Retries after 429, 5xx, timeouts and dropped connections."
    )
    empty_retries: int = Field(default=3, ge=0, description="Retries after an empty answer.")
    backoff_base: float = Field(
        default=1.0, ge=0, description="First backoff ceiling (s); doubles, full jitter."
    )
    max_continuations: int = Field(
        default=3, ge=0, description="Continuations after finish_reason=length."
    )
    parallelism: int | None = Field(
        default=None, ge=1, description="Max requests in flight; the kind's default when empty."
    )
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    reasoning_effort: ReasoningEffort | None = Field(default=None)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Kind-specific options, e.g. random: seed, latency, failure_rate.",
    )

    _secret_fields: ClassVar[list[str]] = ["api_key"]

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        get_spec(kind)
        return kind

    @model_validator(mode="after")
    def _litellm_needs_model(self) -> LLMProvider:
        if self.kind == LITELLM_KIND and not self.model:
            raise UsageError("provider 'litellm' needs a model string, e.g. groq/llama-3.1-8b")
        return self

    # -- derived configuration -------------------------------------------------------------

    @property
    def spec(self) -> ProviderSpec:
        return get_spec(self.kind)

    @property
    def model_name(self) -> str:
        return self.model or self.spec.default_model

    @property
    def max_in_flight(self) -> int:
        return self.parallelism or self.spec.parallelism

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model_name}" if self.model_name else self.kind

    def resolved_api_base(self) -> str | None:
        return self.api_base or self.spec.base_url()

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.spec.key_env:
            return os.environ.get(self.spec.key_env) or None
        return None

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            retries=self.retries, empty_retries=self.empty_retries, backoff_base=self.backoff_base
        )

    def generation_params(self) -> dict[str, Any]:
        """Everything besides provider and model that changes what the model answers."""
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "reasoning_effort": self.reasoning_effort,
        }
        if self.kind == "random":
            params["seed"] = self.options.get("seed", 0)
        return {k: v for k, v in params.items() if v is not None}

    def check_ready(self) -> None:
        """Raise ``NeedsKey`` (naming the variable) before any call that could not succeed."""
        if self.spec.key_env and not self.resolved_api_key():
            raise NeedsKey(self.kind, self.spec.key_env)

    # -- calls -----------------------------------------------------------------------------

    async def acomplete(
        self, prompt: str | list[Message], *, on_text: OnText | None = None
    ) -> Completion:
        """Complete one prompt: retries, continuation after ``finish_reason=length``.

        Args:
            prompt: the user prompt, or a full list of chat messages.
            on_text: called with each piece of text as it arrives (streaming providers), or
                once with the whole answer of each segment otherwise.

        Raises:
            NeedsKey: the provider needs a key that is not set.
            ProviderError: the call failed and retrying did not help.
        """
        self.check_ready()
        backend = load_backend(self.spec)
        messages: list[Message] = (
            [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        )
        policy = self.retry_policy()
        rng = random.Random()
        started = time.perf_counter()
        pieces: list[str] = []
        usage = Usage()
        attempts = 0
        segment = Segment(text="", finish_reason=None, usage=Usage())
        # One span per completion, retries and continuations included (no-op unless enabled).
        with tracing.llm_span(self, messages) as span:
            for _ in range(self.max_continuations + 1):
                segment, tries = await retry_call(
                    lambda messages=messages: self._attempt(backend, messages, on_text),
                    policy,
                    rng=rng,
                    on_retry=span.on_retry,
                )
                attempts += tries
                pieces.append(segment.text)
                usage += segment.usage
                if segment.finish_reason != "length":
                    break
                messages = [
                    *messages,
                    {"role": "assistant", "content": segment.text},
                    {"role": "user", "content": CONTINUE_PROMPT},
                ]
            completion = Completion(
                text="".join(pieces),
                finish_reason=segment.finish_reason,
                usage=usage,
                response_id=segment.response_id,
                provider=self.kind,
                model=self.model_name,
                segments=len(pieces),
                attempts=attempts,
                elapsed=time.perf_counter() - started,
            )
            span.record(completion)
        return completion

    def complete(self, prompt: str | list[Message], *, on_text: OnText | None = None) -> Completion:
        """Synchronous twin of ``acomplete`` (not for use inside a running event loop)."""
        return run_coro_as_sync(self.acomplete(prompt, on_text=on_text))  # type: ignore[return-value]

    async def _attempt(
        self, backend: Any, messages: list[Message], on_text: OnText | None
    ) -> Segment:
        emitted = 0

        def counting(text: str) -> None:
            nonlocal emitted
            emitted += len(text)
            on_text(text)  # type: ignore[misc]

        try:
            # A hard deadline for every backend: litellm ignores its timeout on some streams.
            async with asyncio.timeout(self.timeout + 1):
                segment: Segment = await backend(self, messages, counting if on_text else None)
        except TimeoutError:
            error = ProviderTimeout(f"no answer within {self.timeout:g}s", provider=self.kind)
            if emitted:
                error.retryable = False
            raise error from None
        except ProviderError as error:
            if emitted:
                # Text already went out (e.g. to stdout): a retry would print it twice.
                error.retryable = False
                error.args = (f"stream interrupted after {emitted} characters: {error.args[0]}",)
            raise
        if not segment.text.strip() and segment.finish_reason != "length":
            raise EmptyResponse("the model returned an empty answer", provider=self.kind)
        return segment


def _env_number(name: str, kind: type[int] | type[float]) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def provider_from_env(kind: str | None = None, **overrides: Any) -> LLMProvider:
    """Build a provider block from the environment, with non-None ``overrides`` winning.

    Reads MODEL_PROVIDER, MODEL_NAME, MODEL_REASONING, OPENAI_TEMPERATURE, OPENAI_MAX_TOKENS,
    LITELLM_NUM_RETRIES, LITELLM_TIMEOUT (seconds, fractions allowed), LITELLM_APP_RETRIES and
    the kind's key and base-URL variables. A name that is not a registered kind but contains
    "/" is taken as a litellm model string.
    """
    kind = kind or os.environ.get("MODEL_PROVIDER") or "openai"
    if kind not in PROVIDERS and "/" in kind:
        overrides.setdefault("model", kind)
        kind = LITELLM_KIND
    get_spec(kind)
    reasoning = overrides.get("reasoning_effort") or os.environ.get("MODEL_REASONING") or None
    if reasoning is not None and reasoning not in REASONING_EFFORTS:
        raise UsageError(
            f"invalid reasoning effort {reasoning!r}; choose one of {', '.join(REASONING_EFFORTS)}"
        )
    values: dict[str, Any] = {
        "kind": kind,
        "model": os.environ.get("MODEL_NAME") or None,
        "reasoning_effort": reasoning,
        "temperature": _env_number("OPENAI_TEMPERATURE", float),
        "max_tokens": _env_number("OPENAI_MAX_TOKENS", int),
        "retries": _env_number("LITELLM_NUM_RETRIES", int),
        "timeout": _env_number("LITELLM_TIMEOUT", float),
        "empty_retries": _env_number("LITELLM_APP_RETRIES", int),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return LLMProvider(**{k: v for k, v in values.items() if v is not None})
    except UsageError:
        raise
    except ValueError as error:  # pydantic's ValidationError
        raise UsageError(_one_line_validation_error(error)) from None


def _one_line_validation_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "provider"
        return f"invalid {where}: {first.get('msg', error)}"
    return str(error)
