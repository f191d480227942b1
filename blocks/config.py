"""Provider configuration as a plain pydantic model: what the block holds, without Prefect.

``LLMProvider`` (blocks/llm_provider.py) is this configuration plus Prefect's Block and the
client methods. Planning a batch needs only the configuration (kind, model, generation
parameters), so a rerun with nothing to do never imports Prefect (about 1.1 s).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from blocks.errors import NeedsKey, UsageError
from blocks.providers import LITELLM_KIND, PROVIDERS, ProviderSpec, get_spec
from blocks.retry import RetryPolicy

__all__ = ["DEFAULT_TIMEOUT", "REASONING_EFFORTS", "ProviderConfig", "config_from_env"]

ReasoningEffort = Literal["minimal", "low", "medium", "high"]
REASONING_EFFORTS: tuple[str, ...] = ("minimal", "low", "medium", "high")

DEFAULT_TIMEOUT = 120.0

C = TypeVar("C", bound="ProviderConfig")


class ProviderConfig(BaseModel):
    """Which provider, which model, how to reach it and how hard to push it."""

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
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Sampling temperature; the provider's default when empty.",
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Max tokens per answer segment (continued when cut off)."
    )
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
    accept_truncated: bool = Field(
        default=False,
        description="Keep an answer still cut off after the continuations (marked truncated) "
        "instead of failing with Truncated.",
    )
    parallelism: int | None = Field(
        default=None, ge=1, description="Max requests in flight; the kind's default when empty."
    )
    requests_per_minute: int | None = Field(
        default=None, gt=0, description="Requests started per minute, at most; no limit when empty."
    )
    tokens_per_minute: int | None = Field(
        default=None,
        gt=0,
        description="Tokens (estimated up front) per minute; no limit when empty.",
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description="Reasoning effort for models that think: minimal, low, medium or high.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Kind-specific options, e.g. random: seed, latency, failure_rate.",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        get_spec(kind)
        return kind

    @model_validator(mode="after")
    def _litellm_needs_model(self) -> Self:
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
        """Raise ``NeedsKey`` (naming the variable) before any call that could not succeed.

        With an endpoint of the user's own (``api_base`` or the kind's base-URL variable) no
        key is needed: local OpenAI-compatible servers take none (a dummy one is sent).
        """
        if self.spec.key_env and not self.resolved_api_key() and not self.resolved_api_base():
            raise NeedsKey(self.kind, self.spec.key_env)


def _env_number(name: str, kind: type[int] | type[float]) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _env_flag(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise UsageError(f"{name}={raw!r} is not a valid flag; use 1 or 0")


def config_from_env(
    kind: str | None = None,
    *,
    cls: type[C] = ProviderConfig,  # type: ignore[assignment]
    **overrides: Any,
) -> C:
    """Build a provider configuration (``cls``, e.g. the block) from the environment, with
    non-None ``overrides`` winning.

    Reads MODEL_PROVIDER, MODEL_NAME, MODEL_REASONING (for openai-codex CODEX_REASONING_EFFORT
    first), OPENAI_TEMPERATURE, OPENAI_MAX_TOKENS, LITELLM_NUM_RETRIES, LITELLM_TIMEOUT
    (seconds, fractions allowed), LITELLM_APP_RETRIES, LLM_CONDUCTOR_ACCEPT_TRUNCATED and the
    kind's key and base-URL variables. A name that is not a registered kind but contains "/"
    is taken as a litellm model string.
    """
    kind = kind or os.environ.get("MODEL_PROVIDER") or "openai"
    if kind not in PROVIDERS and "/" in kind:
        if overrides.get("model") is None:  # the CLI passes model=None when -m is not given
            overrides["model"] = kind
        kind = LITELLM_KIND
    get_spec(kind)
    reasoning, source = overrides.get("reasoning_effort"), ""
    # The original llm-conductor's codex provider read CODEX_REASONING_EFFORT: still honoured.
    names = ["MODEL_REASONING"]
    if kind == "openai-codex":
        names.insert(0, "CODEX_REASONING_EFFORT")
    for name in names:
        if not reasoning and os.environ.get(name):
            reasoning, source = os.environ[name], f" in {name}"
    reasoning = reasoning or None
    if reasoning is not None and reasoning not in REASONING_EFFORTS:
        raise UsageError(
            f"invalid reasoning effort {reasoning!r}{source}; "
            f"choose one of {', '.join(REASONING_EFFORTS)}"
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
        "accept_truncated": _env_flag("LLM_CONDUCTOR_ACCEPT_TRUNCATED"),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**{k: v for k, v in values.items() if v is not None})
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
