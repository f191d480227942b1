"""The ``claude`` CLI (Claude Code 2.1.x): ``claude -p --output-format json --tools ""
--no-session-persistence [--model M] [--effort E]``, the prompt on stdin.

It prints one JSON object with ``result``, ``is_error``, ``api_error_status``, ``usage``,
``modelUsage`` and ``total_cost_usd``. Traps (NOTES.md, "Measured in turn 2"): ``subtype``
says "success" even when ``is_error`` is true; ``api_error_status`` is null for "Not logged
in", for a dropped connection ("Unable to connect to API (ECONNRESET)") and for overload once
its own retries are spent ("Repeated 529 Overloaded errors"), so the text decides there.

A completion provider needs none of the agent's tools: with them on, a prompt can make it read
files in the working folder and send them to the API, and the input grows from ≈6.8k to ≈31k
tokens per call. ``options["tools"]`` turns them back on (``"default"`` for all, or a list such
as ``"Read,Grep"``). Sessions are never saved (``--no-session-persistence``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from blocks.errors import (
    AuthenticationFailed,
    CliProviderError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UsageError,
)
from blocks.providers.base import Message, OnText, Segment
from blocks.providers.cli_common import child_env, executable, flatten_messages, run_cli
from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["ENV_NAMES", "ENV_PREFIXES", "attempt", "build_argv", "classify"]

#: What claude reads besides ``cli_common.BASE_ENV``: its key, endpoint, model and behaviour
#: settings (ANTHROPIC_*, CLAUDE_CODE_*, CLAUDE_CONFIG_DIR) and its opt-outs.
ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_")
ENV_NAMES = frozenset(
    {"DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "MAX_THINKING_TOKENS"}
)
#: Claude Code retries on its own for minutes without network; keep it bounded (our retry
#: loop does the rest). A user's own value wins.
_ENV_DEFAULTS = {"CLAUDE_CODE_MAX_RETRIES": "2"}

#: Our reasoning levels on claude's ``--effort`` (low, medium, high, xhigh, max): it has no
#: "minimal", so that is its lowest.
EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}

# Texts claude prints with api_error_status null (2.1.197).
_AUTH_TEXTS = ("not logged in", "/login", "failed to authenticate", "invalid api key")
_TRANSIENT_TEXTS = (
    "overloaded",  # "Repeated 529 Overloaded errors"
    "unable to connect to api",  # ECONNRESET, ECONNREFUSED, ...
    "econnreset",
    "etimedout",
    "socket hang up",
    "request timed out",
    "server-side issue",  # the 5xx hint it appends
)


def _tools(provider: LLMProvider) -> str:
    tools = provider.options.get("tools", "")
    if isinstance(tools, list) and all(isinstance(t, str) for t in tools):
        return ",".join(tools)
    if not isinstance(tools, str):
        raise UsageError(
            f"claude-code: options.tools must be a string such as 'default' or 'Read,Grep' "
            f"(or a list of tool names), got {tools!r}"
        )
    return tools


def build_argv(provider: LLMProvider) -> list[str]:
    # --tools is variadic in claude: it is followed by options only, never by the prompt.
    argv = [executable(provider), "-p", "--output-format", "json"]
    argv += ["--tools", _tools(provider), "--no-session-persistence"]
    if provider.model_name:
        argv += ["--model", provider.model_name]
    if provider.reasoning_effort:
        argv += ["--effort", EFFORT[provider.reasoning_effort]]
    return argv


def classify(
    provider: LLMProvider, data: dict[str, Any], returncode: int, stderr: str
) -> ProviderError:
    """The error for a result with ``is_error`` (or a non-zero exit): the status when claude
    gives one, else the texts it is known to print; anything unknown is not retried."""
    message = " ".join(str(data.get("result") or data.get("error") or "unknown error").split())
    status = data.get("api_error_status")
    status = int(status) if isinstance(status, int | str) and str(status).isdigit() else None
    lowered = message.lower()
    kind = provider.kind
    if status in (401, 403) or (status is None and any(t in lowered for t in _AUTH_TEXTS)):
        return AuthenticationFailed(
            f"claude is not logged in or its key is invalid: {message} "
            "(run `claude` to log in, or set ANTHROPIC_API_KEY)",
            provider=kind,
            status_code=status,
        )
    if status == 429 or (status is None and "rate limit" in lowered):
        return RateLimited(f"claude: {message}", provider=kind)  # no Retry-After is exposed
    if (status is not None and status >= 500) or (
        status is None and any(t in lowered for t in _TRANSIENT_TEXTS)
    ):
        return ProviderUnavailable(f"claude: {message}", provider=kind, status_code=status)
    return CliProviderError(
        f"claude failed: {message}",
        provider=kind,
        exit_code=returncode,
        stderr_tail=stderr,
        status_code=status,
    )


def _usage(data: dict[str, Any]) -> Usage:
    """Tokens that match ``total_cost_usd``: ``modelUsage`` sums every call claude made (the
    answer and its session-title call), ``usage`` only the main one; the former is what was
    paid for, so it is recorded when present."""
    cost = data.get("total_cost_usd")
    models = data.get("modelUsage")
    if isinstance(models, dict) and models:
        entries = [m for m in models.values() if isinstance(m, dict)]
        prompt = sum(
            int(m.get(k) or 0)
            for m in entries
            for k in ("inputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
        )
        completion = sum(int(m.get("outputTokens") or 0) for m in entries)
    else:
        usage = data.get("usage") or {}
        prompt = sum(
            int(usage.get(k) or 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        completion = int(usage.get("output_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=float(cost) if cost is not None else None,
    )


async def attempt(
    provider: LLMProvider, messages: list[Message], on_text: OnText | None
) -> Segment:
    """One ``claude -p`` run."""
    argv = build_argv(provider)
    env = child_env(provider, names=ENV_NAMES, prefixes=ENV_PREFIXES, defaults=_ENV_DEFAULTS)
    output = await run_cli(provider, argv, flatten_messages(messages), env=env)
    try:
        data = json.loads(output.stdout)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError:
        raise CliProviderError(
            f"claude exited {output.returncode} without its JSON result"
            + (f": {output.stderr_tail()}" if output.stderr.strip() else ""),
            provider=provider.kind,
            exit_code=output.returncode,
            stderr_tail=output.stderr_tail(),
        ) from None
    if data.get("is_error") or output.returncode != 0:
        raise classify(provider, data, output.returncode, output.stderr_tail())
    text = str(data.get("result") or "")
    if on_text:
        on_text(text)
    return Segment(
        text=text,
        finish_reason="stop",  # a cut-off answer comes as is_error, without the text
        usage=_usage(data),
        response_id=data.get("session_id"),
    )
