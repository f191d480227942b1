"""Every HTTP provider, through litellm: one attempt, errors mapped onto ``blocks.errors``."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from blocks.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from blocks.providers.base import Message, OnText, Segment
from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["attempt", "completion_kwargs", "embed", "map_litellm_errors"]

logger = logging.getLogger("llm_conductor.litellm")
# Local servers accept any key, but litellm refuses to send a request without one.
_DUMMY_KEY = "sk-no-key-needed"


@functools.cache
def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # else banners go to stdout
    litellm.telemetry = False
    if os.environ.get("LITELLM_DEBUG", "").lower() in {"1", "true", "yes"}:
        litellm._turn_on_debug()
    return litellm


def litellm_model(provider: LLMProvider) -> str:
    prefix = provider.spec.litellm_prefix
    return f"{prefix}/{provider.model_name}" if prefix else provider.model_name


def completion_kwargs(
    provider: LLMProvider, messages: list[Message], stream: bool
) -> dict[str, Any]:
    """The litellm arguments for one attempt, built in one place."""
    kwargs: dict[str, Any] = {
        "model": litellm_model(provider),
        "messages": messages,
        "api_key": provider.resolved_api_key() or _DUMMY_KEY,
        "timeout": provider.timeout,
        "max_retries": 0,  # the one retry loop is ours (blocks/retry.py)
        "num_retries": 0,
    }
    if api_base := provider.resolved_api_base():
        kwargs["api_base"] = api_base
    if provider.temperature is not None:
        kwargs["temperature"] = provider.temperature
    if provider.max_tokens is not None:
        kwargs["max_tokens"] = provider.max_tokens
    if provider.reasoning_effort is not None:
        kwargs["reasoning_effort"] = provider.reasoning_effort
        kwargs["drop_params"] = True  # models without reasoning ignore it instead of failing
    if stream:
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
    return kwargs


def _retry_after(error: BaseException) -> float | None:
    headers: Any = getattr(error, "litellm_response_headers", None)
    if headers is None and (response := getattr(error, "response", None)) is not None:
        headers = getattr(response, "headers", None)
    raw = headers.get("retry-after") if headers is not None else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        when = email.utils.parsedate_to_datetime(raw)
        return max(0.0, when.timestamp() - time.time()) if when else None


_PREFIXES = re.compile(r"^(?:(?:litellm\.)?\w+(?:Error|Exception)(?::| -) )+")


def _message(error: BaseException, secret: str | None) -> str:
    text = " ".join(str(getattr(error, "message", None) or error).split())
    text = _PREFIXES.sub("", text)  # "litellm.X: X: OpenAIException - ..." -> "..."
    if secret and secret != _DUMMY_KEY:
        text = text.replace(secret, "***")
    return text[:300] or type(error).__name__


def _connection_failure(error: BaseException) -> BaseException | None:
    """The transport error behind ``error``: litellm reports a refused connection as a 500."""
    import httpx
    import openai

    seen: BaseException | None = error
    while seen is not None:
        transport = openai.APIConnectionError | httpx.TransportError | ConnectionError
        timeout = openai.APITimeoutError | httpx.TimeoutException
        if isinstance(seen, transport) and not isinstance(seen, timeout):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def map_litellm_errors(provider: LLMProvider) -> Iterator[None]:
    """Turn litellm's and the OpenAI SDK's exceptions into our tree, by status code.

    Classes are not reliable (NOTES.md): a refused connection and missing credentials both
    arrive as InternalServerError 500, so the status code and a few markers decide.
    """
    litellm = _litellm()
    try:
        yield
    except ProviderError:
        raise
    except Exception as error:
        # Every litellm exception derives from the OpenAI SDK's root; anything else is a bug
        # in our code and stays visible.
        import openai

        if not isinstance(error, openai.OpenAIError | ConnectionError | TimeoutError):
            raise
        name = provider.kind
        status = getattr(error, "status_code", None)
        message = _message(error, provider.resolved_api_key())
        if isinstance(error, litellm.Timeout | TimeoutError) or status == 408:
            raise ProviderTimeout(
                f"no answer within {provider.timeout:g}s", provider=name, status_code=408
            ) from error
        if _connection_failure(error) is not None:
            where = provider.resolved_api_base() or "the provider"
            raise ProviderUnavailable(
                f"connection to {where} failed: {message}", provider=name
            ) from error
        if status == 429:
            raise RateLimited(
                f"rate limited: {message}", provider=name, retry_after=_retry_after(error)
            ) from error
        if status in (401, 403):
            hint = f" (check {provider.spec.key_env})" if provider.spec.key_env else ""
            raise AuthenticationFailed(
                f"authentication failed{hint}: {message}", provider=name, status_code=status
            ) from error
        if isinstance(status, int) and 400 <= status < 500:
            raise BadRequest(message, provider=name, status_code=status) from error
        raise ProviderUnavailable(message, provider=name, status_code=status) from error


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)


def _cost(litellm: Any, response: Any) -> float | None:
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if cost is not None:
        return float(cost)
    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:  # litellm raises for models it has no price for: cost stays unknown
        return None


async def attempt(
    provider: LLMProvider, messages: list[Message], on_text: OnText | None
) -> Segment:
    """One litellm call; streams when ``on_text`` is given and the kind can stream."""
    litellm = _litellm()
    stream = on_text is not None and provider.spec.streams
    kwargs = completion_kwargs(provider, messages, stream)
    with map_litellm_errors(provider):
        if stream:
            chunks = []
            async for chunk in await litellm.acompletion(**kwargs):
                chunks.append(chunk)
                if chunk.choices and (delta := chunk.choices[0].delta.content):
                    on_text(delta)  # type: ignore[misc]
            if not chunks:
                raise ProviderUnavailable(
                    "the stream ended without any data", provider=provider.kind
                )
            response = litellm.stream_chunk_builder(chunks, messages=messages)
        else:
            response = await litellm.acompletion(**kwargs)
    if response is None or not getattr(response, "choices", None):
        raise ProviderUnavailable("the answer has no choices", provider=provider.kind)
    choice = response.choices[0]
    text = choice.message.content or ""
    if on_text and not stream:
        on_text(text)
    prompt_tokens, completion_tokens = _usage(response)
    return Segment(
        text=text,
        finish_reason=choice.finish_reason,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=_cost(litellm, response),
        ),
        response_id=getattr(response, "id", None),
    )


async def embed(provider: LLMProvider, texts: list[str]) -> list[list[float]]:
    """One ``litellm.aembedding`` call: a vector per text, in order (semantic dedup)."""
    litellm = _litellm()
    with map_litellm_errors(provider):
        response = await litellm.aembedding(
            model=litellm_model(provider),
            input=texts,
            api_base=provider.resolved_api_base(),
            api_key=provider.resolved_api_key() or _DUMMY_KEY,
            timeout=provider.timeout,
            max_retries=0,
        )
    data = sorted(response.data, key=lambda item: item["index"])
    if len(data) != len(texts):
        raise ProviderUnavailable(
            f"{len(data)} embeddings for {len(texts)} texts", provider=provider.kind
        )
    return [list(item["embedding"]) for item in data]
