"""Every HTTP provider kind, the one retry loop and continuation, over real HTTP on loopback."""

from __future__ import annotations

import time
import traceback

import pytest

from blocks import (
    AuthenticationFailed,
    BadRequest,
    EmptyResponse,
    LLMProvider,
    NeedsKey,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Truncated,
    UsageError,
    provider_from_env,
)
from tests.support.llm_server import _count_tokens

SECRET = "sk-test-secret-value-123"


def openai_block(server, **kw) -> LLMProvider:
    values = dict(
        kind="openai",
        model="test-model",
        api_base=server.base_url,
        api_key=SECRET,
        backoff_base=0.01,
        timeout=5,
    )
    values.update(kw)
    return LLMProvider(**values)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "base", "path"),
    [
        ("openai", "base_url", "/v1/chat/completions"),
        ("openrouter", "base_url", "/v1/chat/completions"),
        ("lmstudio", "base_url", "/v1/chat/completions"),
        ("anthropic", "root_url", "/v1/messages"),
        ("ollama", "root_url", "/api/chat"),
        ("gemini", "gemini_url", ":generateContent"),
    ],
)
async def test_every_http_kind_reaches_its_api(llm_server, kind, base, path):
    llm_server.reply = f"hello from {kind}"
    provider = LLMProvider(
        kind=kind, model="m1", api_base=getattr(llm_server, base), api_key=SECRET, timeout=5
    )
    completion = await provider.acomplete("Say hello")
    assert completion.text == f"hello from {kind}"
    assert completion.provider == kind and completion.model == "m1"
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    assert completion.finish_reason == "stop" and completion.segments == 1
    [request] = llm_server.requests
    assert path in request.path
    assert "Say hello" in str(request.json)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama", "gemini"])
async def test_streaming_delivers_pieces_and_usage(llm_server, kind):
    base = {"openai": "base_url", "anthropic": "root_url", "ollama": "root_url"}.get(
        kind, "gemini_url"
    )
    llm_server.reply = "one two three four five six seven eight"
    provider = LLMProvider(
        kind=kind, model="m1", api_base=getattr(llm_server, base), api_key=SECRET
    )
    pieces: list[str] = []
    completion = await provider.acomplete("stream please", on_text=pieces.append)
    assert len(pieces) > 1, "the answer must arrive in several pieces"
    assert "".join(pieces) == completion.text == llm_server.reply
    assert completion.completion_tokens > 0


@pytest.mark.asyncio
async def test_any_litellm_model_string(llm_server):
    llm_server.reply = "via hosted_vllm"
    provider = provider_from_env(
        "hosted_vllm/my-model", api_base=llm_server.base_url, api_key=SECRET
    )
    assert provider.kind == "litellm" and provider.model == "hosted_vllm/my-model"
    assert (await provider.acomplete("hi")).text == "via hosted_vllm"


def segment_reply(body) -> str:
    """A different text per continuation, as a model that does continue writes."""
    n = sum(m["role"] == "assistant" for m in body["messages"])
    return " ".join(f"part{n}-word{i}" for i in range(6))


@pytest.mark.asyncio
async def test_continuation_joins_segments_and_sums_usage(llm_server):
    llm_server.reply = segment_reply
    llm_server.length_rounds = 2
    completion = await openai_block(llm_server).acomplete("long answer")
    assert completion.segments == 3
    assert completion.finish_reason == "stop"
    bodies = [r.json for r in llm_server.requests]
    assert len(bodies) == 3
    # Each continuation shows the model what it already wrote.
    assert bodies[1]["messages"][1]["role"] == "assistant"
    pieces = [m["content"] for m in bodies[2]["messages"] if m["role"] == "assistant"]
    assert len(pieces) == 2
    last = segment_reply(bodies[2])
    assert completion.text == "".join(pieces) + last, "pieces joined exactly"
    expected = sum(_count_tokens(p) for p in pieces) + _count_tokens(last)
    assert completion.completion_tokens == expected, "usage summed over all segments"


@pytest.mark.asyncio
async def test_still_truncated_after_the_continuations_is_an_error(llm_server):
    llm_server.reply = segment_reply
    llm_server.length_rounds = 10
    with pytest.raises(Truncated, match=r"truncated after 2 continuations") as caught:
        await openai_block(llm_server, max_continuations=2).acomplete("x")
    assert len(llm_server.requests) == 3
    kept = caught.value.completion
    assert kept is not None and kept.segments == 3 and kept.completion_tokens > 0
    assert caught.value.answer == kept.text and "part2-" in kept.text


@pytest.mark.asyncio
async def test_accepted_truncation_is_still_marked(llm_server):
    llm_server.reply = segment_reply
    llm_server.length_rounds = 10
    provider = openai_block(llm_server, max_continuations=1, accept_truncated=True)
    completion = await provider.acomplete("x")
    assert completion.segments == 2 and completion.truncated
    assert completion.metadata()["truncated"] is True
    llm_server.length_rounds = 0
    assert "truncated" not in (await provider.acomplete("x")).metadata()


@pytest.mark.asyncio
async def test_a_repeating_continuation_stops_and_counts_as_truncated(llm_server):
    # A small model answering every "continue" with the same piece.
    llm_server.reply = "The same thirty-two token piece, word for word, every time it is asked."
    llm_server.length_rounds = 10
    with pytest.raises(Truncated, match="continuation 1 repeated") as caught:
        await openai_block(llm_server, max_continuations=3).acomplete("x")
    assert len(llm_server.requests) == 2, "no third request once the answer repeats"
    kept = caught.value.completion
    first = llm_server.requests[1].json["messages"][1]["content"]
    assert kept.text == first, "the repeat is not added to the answer"
    assert kept.completion_tokens == 2 * _count_tokens(first), "but its tokens were paid"


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["500", "503", "drop", "garbage"])
async def test_transient_errors_are_retried(llm_server, fault):
    llm_server.enqueue(fault)
    llm_server.enqueue(fault)
    completion = await openai_block(llm_server, retries=2).acomplete("x")
    assert completion.attempts == 3
    assert len(llm_server.requests) == 3


@pytest.mark.asyncio
async def test_timeout_is_retried_then_raised(llm_server):
    llm_server.enqueue("timeout", seconds=3)
    llm_server.enqueue("timeout", seconds=3)
    with pytest.raises(ProviderTimeout):
        await openai_block(llm_server, retries=1, timeout=0.3).acomplete("x")
    assert len(llm_server.requests) == 2


@pytest.mark.asyncio
async def test_transient_budget_is_respected(llm_server):
    for _ in range(5):
        llm_server.enqueue("500")
    with pytest.raises(ProviderUnavailable) as caught:
        await openai_block(llm_server, retries=2).acomplete("x")
    assert caught.value.status_code == 500
    assert len(llm_server.requests) == 3


@pytest.mark.asyncio
async def test_429_honours_retry_after(llm_server):
    llm_server.enqueue("429", retry_after=1)
    started = time.monotonic()
    completion = await openai_block(llm_server, backoff_base=0.0).acomplete("x")
    assert time.monotonic() - started >= 0.95, "Retry-After: 1 must be waited for"
    assert completion.attempts == 2


@pytest.mark.asyncio
async def test_429_without_retry_after_raises_rate_limited_when_exhausted(llm_server):
    for _ in range(3):
        llm_server.enqueue("429")
    with pytest.raises(RateLimited):
        await openai_block(llm_server, retries=2).acomplete("x")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "error"), [("400", BadRequest), ("404", BadRequest), ("401", AuthenticationFailed)]
)
async def test_other_4xx_are_never_retried(llm_server, fault, error):
    llm_server.enqueue(fault)
    with pytest.raises(error) as caught:
        await openai_block(llm_server, retries=3).acomplete("x")
    assert len(llm_server.requests) == 1
    assert SECRET not in str(caught.value)


@pytest.mark.asyncio
async def test_empty_answer_retried_on_its_own_budget(llm_server):
    llm_server.enqueue("empty")
    llm_server.enqueue("empty")
    completion = await openai_block(llm_server, retries=0, empty_retries=2).acomplete("x")
    assert completion.attempts == 3
    for _ in range(3):
        llm_server.enqueue("empty")
    with pytest.raises(EmptyResponse):
        await openai_block(llm_server, retries=5, empty_retries=1).acomplete("x")


@pytest.mark.asyncio
async def test_stream_interrupted_after_output_is_not_retried(llm_server):
    llm_server.reply = "one two three four five six seven eight nine ten"
    llm_server.enqueue("drop_mid_stream")
    pieces: list[str] = []
    with pytest.raises(ProviderUnavailable, match="interrupted") as caught:
        await openai_block(llm_server, retries=3).acomplete("x", on_text=pieces.append)
    assert pieces, "some text was streamed before the drop"
    assert not caught.value.retryable
    assert len(llm_server.requests) == 1


@pytest.mark.asyncio
async def test_a_stream_that_stops_without_finishing_is_an_error(llm_server):
    # The server sends part of the answer and ends the response cleanly: litellm would make
    # up finish_reason="stop" for it.
    llm_server.reply = "Hello world, this answer is cut off halfway through"
    llm_server.enqueue("cut_stream")
    pieces: list[str] = []
    with pytest.raises(ProviderUnavailable, match="no finish reason") as caught:
        await openai_block(llm_server, retries=3).acomplete("x", on_text=pieces.append)
    assert pieces and "".join(pieces) != llm_server.reply
    assert not caught.value.retryable, "text already went out"
    assert len(llm_server.requests) == 1


@pytest.mark.asyncio
async def test_a_stream_without_usage_is_marked_estimated(llm_server):
    llm_server.reply = "one two three four"
    provider = openai_block(llm_server)
    counted = await provider.acomplete("x", on_text=lambda _: None)
    assert not counted.usage.estimated and "usage_estimated" not in counted.metadata()
    llm_server.stream_usage = False  # as llama.cpp-style servers stream
    estimated = await provider.acomplete("x", on_text=lambda _: None)
    assert estimated.usage.estimated and estimated.metadata()["usage_estimated"] is True
    assert estimated.completion_tokens > 0


@pytest.mark.asyncio
@pytest.mark.parametrize(("hint", "wait"), [("300ms", "0.30s"), ("1.5s", "1.50s")])
async def test_429_body_hint_is_honoured_without_retry_after(llm_server, caplog, hint, wait):
    llm_server.enqueue(
        "429",
        message="Rate limit reached for gpt-4o-mini in organization org-x on tokens per min "
        f"(TPM): Limit 200000, Used 199990, Requested 60. Please try again in {hint}.",
    )
    caplog.set_level("INFO", logger="llm_conductor.retry")
    completion = await openai_block(llm_server, backoff_base=0.0).acomplete("x")
    assert completion.attempts == 2
    assert any(f" in {wait}: " in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_openrouter_model_ids_are_not_prefixed_twice(llm_server):
    for model, upstream in [
        ("openrouter/anthropic/claude-3.5-haiku", "anthropic/claude-3.5-haiku"),
        ("anthropic/claude-3.5-haiku", "anthropic/claude-3.5-haiku"),
        ("openrouter/auto", "openrouter/auto"),  # OpenRouter's own id stays whole
    ]:
        llm_server.reset()
        provider = LLMProvider(
            kind="openrouter", model=model, api_base=llm_server.base_url, api_key=SECRET
        )
        await provider.acomplete("x")
        assert llm_server.requests[0].json["model"] == upstream


@pytest.mark.asyncio
async def test_a_keyless_local_server_needs_no_key(llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    llm_server.reply = "no key needed"
    provider = provider_from_env("openai")
    provider.check_ready()
    assert (await provider.acomplete("x")).text == "no key needed"
    assert llm_server.requests[0].headers["authorization"] == "Bearer sk-no-key-needed"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(NeedsKey, match="OPENAI_API_KEY"):
        provider_from_env("openai").check_ready()


@pytest.mark.asyncio
async def test_a_litellm_model_string_as_provider(llm_server, monkeypatch):
    # As the CLI calls it: -p openai/gemma-3-270m without -m passes model=None.
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    provider = provider_from_env("openai/gemma-3-270m", model=None)
    assert (provider.kind, provider.model) == ("litellm", "openai/gemma-3-270m")
    await provider.acomplete("x")
    assert llm_server.requests[-1].json["model"] == "gemma-3-270m"
    # litellm's own key variable for the vendor is used, not replaced by a dummy key.
    monkeypatch.setenv("GROQ_API_KEY", "gsk-from-env")
    groq = provider_from_env("groq/llama-3.1-8b-instant", model=None, api_base=llm_server.base_url)
    await groq.acomplete("x")
    request = llm_server.requests[-1]
    assert request.json["model"] == "llama-3.1-8b-instant"
    assert request.headers["authorization"] == "Bearer gsk-from-env"


@pytest.mark.asyncio
async def test_errors_never_carry_the_raw_exception_or_the_key(llm_server):
    # A server that echoes the key it was sent, as some proxies do.
    llm_server.enqueue("401", message="Incorrect API key provided: {api_key}. Go away.")
    with pytest.raises(AuthenticationFailed) as caught:
        await openai_block(llm_server).acomplete("x")
    error = caught.value
    assert llm_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert error.__cause__ is None and error.__context__ is None
    shown = "".join(traceback.format_exception(error))
    assert SECRET not in shown and "***" in str(error)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "env", "path", "hint"),
    [
        ("ollama", "OLLAMA_BASE_URL", "", "`ollama serve`"),
        ("lmstudio", "LMSTUDIO_BASE_URL", "/v1", "lms server start"),
        ("openai", "OPENAI_BASE_URL", "/v1", "start the server there"),
    ],
)
async def test_a_local_server_that_is_not_running(unused_port, monkeypatch, kind, env, path, hint):
    url = f"http://127.0.0.1:{unused_port}{path}"
    monkeypatch.setenv(env, url)
    provider = provider_from_env(kind, retries=0, timeout=5)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.acomplete("x")
    message = str(caught.value)
    assert f"nothing answers at {url} ({env})" in message and hint in message
    assert "SSLContext" not in message and "\n" not in message


@pytest.mark.asyncio
async def test_refused_connection_is_unavailable(unused_port):
    provider = LLMProvider(
        kind="openai",
        api_base=f"http://127.0.0.1:{unused_port}/v1",
        api_key=SECRET,
        retries=1,
        backoff_base=0.0,
        timeout=2,
    )
    with pytest.raises(ProviderUnavailable, match="nothing answers at http://127.0.0.1:"):
        await provider.acomplete("x")


@pytest.mark.asyncio
async def test_cost_known_for_priced_model_and_unknown_otherwise(llm_server):
    priced = await openai_block(llm_server, model="gpt-4o-mini").acomplete("x")
    assert priced.cost is not None and priced.cost > 0
    unknown = await openai_block(llm_server, model="no-such-model-xyz").acomplete("x")
    assert unknown.cost is None


def test_missing_key_names_the_variable():
    with pytest.raises(NeedsKey, match="OPENROUTER_API_KEY"):
        LLMProvider(kind="openrouter").check_ready()


def test_key_is_never_shown():
    provider = LLMProvider(kind="openai", api_key=SECRET)
    assert SECRET not in repr(provider) and SECRET not in str(provider.model_dump())
    assert SECRET not in provider.model_dump_json()


def test_env_configuration_and_flags_override(monkeypatch):
    monkeypatch.setenv("MODEL_PROVIDER", "openrouter")
    monkeypatch.setenv("MODEL_NAME", "vendor/model-a")
    monkeypatch.setenv("MODEL_REASONING", "low")
    monkeypatch.setenv("OPENAI_TEMPERATURE", "0.3")
    monkeypatch.setenv("OPENAI_MAX_TOKENS", "512")
    monkeypatch.setenv("LITELLM_NUM_RETRIES", "7")
    monkeypatch.setenv("LITELLM_TIMEOUT", "2.5")
    monkeypatch.setenv("LITELLM_APP_RETRIES", "4")
    provider = provider_from_env()
    assert (provider.kind, provider.model_name, provider.reasoning_effort) == (
        "openrouter",
        "vendor/model-a",
        "low",
    )
    assert (provider.temperature, provider.max_tokens) == (0.3, 512)
    assert (provider.retries, provider.timeout, provider.empty_retries) == (7, 2.5, 4)
    assert provider.max_in_flight == 32
    flagged = provider_from_env("lmstudio", model="other", reasoning_effort="high", timeout=9)
    assert (flagged.kind, flagged.model_name, flagged.reasoning_effort, flagged.timeout) == (
        "lmstudio",
        "other",
        "high",
        9,
    )
    assert flagged.max_in_flight == 1


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("LITELLM_TIMEOUT", "soon", "LITELLM_TIMEOUT"),
        ("OPENAI_MAX_TOKENS", "1.5", "OPENAI_MAX_TOKENS"),
        ("MODEL_REASONING", "extreme", "reasoning"),
        ("LITELLM_TIMEOUT", "-1", "timeout"),
    ],
)
def test_bad_env_is_a_usage_error(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(UsageError, match=message):
        provider_from_env("random")


def test_default_base_urls_follow_env(monkeypatch):
    assert LLMProvider(kind="lmstudio").resolved_api_base() == "http://localhost:1234/v1"
    assert LLMProvider(kind="ollama").resolved_api_base() == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://127.0.0.1:9999")
    assert LLMProvider(kind="ollama").resolved_api_base() == "http://127.0.0.1:9999"


def test_random_provider_is_deterministic_and_offline():
    a = LLMProvider(kind="random", options={"seed": 1}).complete("Give me a list of rivers")
    b = LLMProvider(kind="random", options={"seed": 1}).complete("Give me a list of rivers")
    c = LLMProvider(kind="random", options={"seed": 2}).complete("Give me a list of rivers")
    assert a.text == b.text != c.text
    assert a.text.startswith("1. ")
    assert a.cost == 0.0


def test_random_provider_injected_failures_are_retried():
    provider = LLMProvider(
        kind="random", options={"failure_rate": 0.5}, retries=20, backoff_base=0.0
    )
    attempts = [provider.complete(f"prompt {i}").attempts for i in range(20)]
    assert max(attempts) > 1, "with a 50% failure rate some calls must have been retried"


@pytest.mark.asyncio
async def test_estimated_usage_is_marked_in_the_manifest_and_the_summary(llm_server):
    import json

    from tasks.manifest import Entry
    from tasks.reporting import BatchReporter, PromptOutcome

    llm_server.stream_usage = False
    completion = await openai_block(llm_server).acomplete("x", on_text=lambda _: None)
    line = Entry.succeeded("a.prompt.md", "k", "a.md", completion).to_json()
    assert json.loads(line)["usage"]["estimated"] is True
    assert Entry.from_dict(json.loads(line)).usage.estimated, "read back as estimated"
    reporter = BatchReporter(1, tty=False, artifacts=False)
    await reporter.record(
        PromptOutcome(
            file="a.prompt.md",
            status="ok",
            completion_tokens=completion.completion_tokens,
            usage_estimated=completion.usage.estimated,
        )
    )
    assert "tokens (some estimated)" in (await reporter.close()).line()


def test_list_counts_an_endpoint_of_ones_own_as_ready(monkeypatch):
    from blocks import get_spec

    assert not get_spec("openai").requirement_met()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    assert get_spec("openai").requirement_met(), "no key is needed there"
