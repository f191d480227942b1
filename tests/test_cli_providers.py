"""claude and codex as real subprocesses: fake executables that speak the real formats."""

from __future__ import annotations

import time

import pytest

from blocks import (
    AuthenticationFailed,
    CliProviderError,
    LLMProvider,
    ProviderTimeout,
    RateLimited,
)


@pytest.mark.asyncio
async def test_claude_flags_stdin_usage_and_cost(fake_cli_path, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_REPLY", "claude says hi")
    completion = await LLMProvider(kind="claude-code", model="sonnet").acomplete("Hello there")
    assert completion.text == "claude says hi"
    assert completion.cost is not None and completion.cost > 0
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    assert completion.response_id
    [entry] = fake_cli_path.log_entries()
    assert entry["argv"] == ["-p", "--output-format", "json", "--model", "sonnet"]
    assert entry["stdin"] == "Hello there", "the prompt goes on stdin, never in argv"


@pytest.mark.asyncio
async def test_claude_not_logged_in_is_an_auth_error_despite_subtype_success(
    fake_cli_path, monkeypatch
):
    monkeypatch.setenv("FAKE_CLI_MODE", "not_logged_in")
    provider = LLMProvider(kind="claude-code", retries=3, backoff_base=0)
    with pytest.raises(AuthenticationFailed, match="log in"):
        await provider.acomplete("x")
    assert len(fake_cli_path.log_entries()) == 1, "auth errors are not retried"


@pytest.mark.asyncio
async def test_claude_rate_limit_is_retried(fake_cli_path, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "rate_limited")
    with pytest.raises(RateLimited):
        await LLMProvider(kind="claude-code", retries=2, backoff_base=0).acomplete("x")
    assert len(fake_cli_path.log_entries()) == 3


@pytest.mark.asyncio
async def test_codex_flags_reasoning_stdin_and_usage(fake_cli_path, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_REPLY", "codex answer")
    provider = LLMProvider(kind="openai-codex", model="gpt-5-codex", reasoning_effort="high")
    completion = await provider.acomplete("Write a haiku")
    assert completion.text == "codex answer"
    assert completion.cost is None, "codex reports no cost; none is made up"
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    [entry] = fake_cli_path.log_entries()
    assert entry["argv"] == [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--ephemeral",
        "-s",
        "read-only",
        "-m",
        "gpt-5-codex",
        "-c",
        'model_reasoning_effort="high"',
        "-",
    ]
    assert entry["stdin"] == "Write a haiku"


@pytest.mark.asyncio
async def test_codex_turn_failed_is_a_clear_error(fake_cli_path, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "error")
    with pytest.raises(CliProviderError, match="codex failed"):
        await LLMProvider(kind="openai-codex", retries=0).acomplete("x")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["claude-code", "openai-codex"])
async def test_hanging_cli_is_killed_at_the_timeout(fake_cli_path, monkeypatch, kind):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="killed"):
        await LLMProvider(kind=kind, timeout=0.5, retries=0).acomplete("x")
    assert time.monotonic() - started < 60  # the fake hangs forever: any end is the kill


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "tool"), [("claude-code", "claude"), ("openai-codex", "codex")])
async def test_missing_binary_says_how_to_install(monkeypatch, tmp_path, kind, tool):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CliProviderError, match=f"`{tool}` not found on PATH.*npm install"):
        await LLMProvider(kind=kind).acomplete("x")
