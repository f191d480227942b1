"""Every HTTP provider, through litellm: one attempt, errors mapped onto ``blocks.errors``."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from blocks.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from blocks.providers import LITELLM_KIND
from blocks.providers.base import Message, OnText, Segment
from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["attempt", "completion_kwargs", "embed", "prepare", "provider_error"]

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


def prepare() -> None:
    """Import litellm and set up what its first call would set up lazily (the OpenAI SDK's
    resources, the tokenizer used for costs, the stream wrapper): ≈3 s that must not count
    against the first attempt's deadline. Once per process."""
    _warm_up()


@functools.cache
def _warm_up() -> None:
    litellm = _litellm()
    import openai.resources  # noqa: F401  (what ``client.chat`` imports on first use)

    with contextlib.suppress(Exception):  # only a warm-up: the call itself reports problems
        litellm.token_counter(model="gpt-4o-mini", text="warm up")
        # A mocked streamed call (no network) builds what the first real one would: the
        # stream wrapper's pydantic models, litellm's service logger (≈0.5 s measured).
        messages = [{"role": "user", "content": "warm up"}]
        stream = litellm.completion(
            model="openai/warm-up", messages=messages, mock_response="ok", stream=True
        )
        for _chunk in stream:
            pass


def litellm_model(provider: LLMProvider) -> str:
    prefix = provider.spec.litellm_prefix
    name = provider.model_name
    if prefix == "openrouter" and name.startswith("openrouter/") and name.count("/") >= 2:
        # litellm's own spelling "openrouter/vendor/model": the vendor's id is the rest (an
        # id such as "openrouter/auto" is OpenRouter's own and stays whole).
        name = name.removeprefix("openrouter/")
    return f"{prefix}/{name}" if prefix else name


def _api_key(provider: LLMProvider) -> str | None:
    """The key to send: the configured one; for a litellm model string without one, None
    when litellm finds the provider's own variable (GROQ_API_KEY...); else a dummy one."""
    if key := provider.resolved_api_key():
        return key
    if provider.kind == LITELLM_KIND:
        found = _litellm().validate_environment(model=litellm_model(provider))
        if not found.get("missing_keys"):
            return None
    return _DUMMY_KEY


def completion_kwargs(
    provider: LLMProvider, messages: list[Message], stream: bool
) -> dict[str, Any]:
    """The litellm arguments for one attempt, built in one place."""
    kwargs: dict[str, Any] = {
        "model": litellm_model(provider),
        "messages": messages,
        "timeout": provider.timeout,
        "max_retries": 0,  # the one retry loop is ours (blocks/retry.py)
        "num_retries": 0,
    }
    if (api_key := _api_key(provider)) is not None:
        kwargs["api_key"] = api_key
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


def _connection_failure(error: BaseException) -> tuple[BaseException | None, bool]:
    """The transport error behind ``error`` (litellm reports a refused connection as a 500)
    and whether nothing listens at the address at all."""
    import httpx
    import openai

    transport = openai.APIConnectionError | httpx.TransportError | ConnectionError
    timeout = openai.APITimeoutError | httpx.TimeoutException
    found: BaseException | None = None
    refused = False
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, transport) and not isinstance(seen, timeout):
            found = found or seen
            refused = refused or isinstance(seen, ConnectionRefusedError | httpx.ConnectError)
        seen = seen.__cause__ or seen.__context__
    return found, refused


def _nothing_answers(provider: LLMProvider, where: str) -> str:
    spec = provider.spec
    from_env = spec.base_url_env if provider.api_base is None and spec.base_url_env else None
    source = f" ({from_env})" if from_env and os.environ.get(from_env) else ""
    hint = spec.start_hint or "start the server there, or fix the address"
    return f"nothing answers at {where}{source}: {hint}"


def provider_error(provider: LLMProvider, error: Exception) -> ProviderError:
    """Our error for a litellm or OpenAI SDK exception, classified by status code.

    Classes are not reliable (NOTES.md): a refused connection and missing credentials both
    arrive as InternalServerError 500, so the status code and a few markers decide. The
    result carries only a cleaned-up message with the key masked: callers raise it
    ``from None``, because the original exception (and its chain) may hold the key that a
    server echoed back, and Prefect prints and stores whole chains. Anything that is not
    litellm's or the SDK's is a bug in our code and is re-raised.
    """
    import openai

    # Every litellm exception derives from the OpenAI SDK's root.
    if not isinstance(error, openai.OpenAIError | ConnectionError | TimeoutError):
        raise error
    litellm = _litellm()
    name = provider.kind
    status = getattr(error, "status_code", None)
    message = _message(error, provider.resolved_api_key())
    logger.debug(
        "%s: litellm raised %s (status %s): %s", name, type(error).__name__, status, message
    )
    if isinstance(error, litellm.Timeout | TimeoutError) or status == 408:
        return ProviderTimeout(
            f"no answer within {provider.timeout:g}s", provider=name, status_code=408
        )
    transport, refused = _connection_failure(error)
    if transport is not None:
        where = provider.resolved_api_base() or "the provider"
        if refused:
            return ProviderUnavailable(_nothing_answers(provider, where), provider=name)
        return ProviderUnavailable(f"connection to {where} failed: {message}", provider=name)
    if status == 429:
        return RateLimited(
            f"rate limited: {message}", provider=name, retry_after=_retry_after(error)
        )
    if status in (401, 403):
        hint = f" (check {provider.spec.key_env})" if provider.spec.key_env else ""
        return AuthenticationFailed(
            f"authentication failed{hint}: {message}", provider=name, status_code=status
        )
    if isinstance(status, int) and 400 <= status < 500:
        return BadRequest(message, provider=name, status_code=status)
    return ProviderUnavailable(message, provider=name, status_code=status)


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
    failure: ProviderError | None = None
    try:
        if stream:
            response, estimated = await _streamed(litellm, provider, kwargs, on_text)
        else:
            response, estimated = await litellm.acompletion(**kwargs), False
    except ProviderError:
        raise
    except Exception as error:
        failure = provider_error(provider, error)
    if failure is not None:
        # Raised outside the except clause, so not even __context__ keeps the original.
        raise failure from None
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
            estimated=estimated,
        ),
        response_id=getattr(response, "id", None),
    )


async def embed(provider: LLMProvider, texts: list[str]) -> list[list[float]]:
    """One ``litellm.aembedding`` call: a vector per text, in order (semantic dedup)."""
    litellm = _litellm()
    failure: ProviderError | None = None
    try:
        response = await litellm.aembedding(
            model=litellm_model(provider),
            input=texts,
            api_base=provider.resolved_api_base(),
            api_key=_api_key(provider),
            timeout=provider.timeout,
            max_retries=0,
        )
    except Exception as error:
        failure = provider_error(provider, error)
    if failure is not None:
        raise failure from None  # outside the except clause: no chain holds the key
    data = sorted(response.data, key=lambda item: item["index"])
    if len(data) != len(texts):
        raise ProviderUnavailable(
            f"{len(data)} embeddings for {len(texts)} texts", provider=provider.kind
        )
    return [list(item["embedding"]) for item in data]


async def _streamed(
    litellm: Any, provider: LLMProvider, kwargs: dict[str, Any], on_text: OnText
) -> tuple[Any, bool]:
    """The response rebuilt from a stream, and whether its usage is litellm's estimate."""
    chunks = []
    wrapper = await litellm.acompletion(**kwargs)
    async for chunk in wrapper:
        chunks.append(chunk)
        if chunk.choices and (delta := chunk.choices[0].delta.content):
            on_text(delta)
    if not chunks:
        raise ProviderUnavailable("the stream ended without any data", provider=provider.kind)
    # litellm closes a stream that simply stops with a made-up finish_reason "stop" (and
    # estimated usage): what the server itself sent is kept on the wrapper.
    received = (
        getattr(wrapper, "received_finish_reason", "stop"),
        getattr(wrapper, "intermittent_finish_reason", None),
    )
    if not any(received):
        raise ProviderUnavailable(
            "the stream ended before the answer did (no finish reason)", provider=provider.kind
        )
    raw = getattr(wrapper, "chunks", None)
    estimated = raw is not None and not any(getattr(c, "usage", None) for c in raw)
    return litellm.stream_chunk_builder(chunks, messages=kwargs["messages"]), estimated
