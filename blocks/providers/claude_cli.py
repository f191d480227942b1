"""The ``claude`` CLI (Claude Code): ``claude -p --output-format json [--model M]``.

It prints one JSON object with ``result``, ``is_error``, ``usage``, ``total_cost_usd`` and
``api_error_status``. Trap (NOTES.md): when not logged in ``subtype`` still says "success";
only ``is_error`` and ``api_error_status`` tell the truth.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from blocks.errors import AuthenticationFailed, CliProviderError, RateLimited
from blocks.providers.base import Message, OnText, Segment
from blocks.providers.cli_common import executable, flatten_messages, run_cli
from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["attempt", "build_argv"]

_AUTH_MARKERS = ("invalid api key", "/login", "not logged in", "authentication")


def build_argv(provider: LLMProvider) -> list[str]:
    argv = [executable(provider), "-p", "--output-format", "json"]
    if provider.model_name:
        argv += ["--model", provider.model_name]
    return argv


def _error(provider: LLMProvider, data: dict[str, Any], returncode: int, stderr: str) -> Exception:
    message = " ".join(str(data.get("result") or data.get("error") or "unknown error").split())
    status = data.get("api_error_status")
    status = int(status) if isinstance(status, int | str) and str(status).isdigit() else None
    if status in (401, 403) or any(m in message.lower() for m in _AUTH_MARKERS):
        return AuthenticationFailed(
            f"claude is not logged in or its key is invalid: {message} (run `claude` to log in)",
            provider=provider.kind,
            status_code=status,
        )
    if status == 429:
        return RateLimited(f"claude: {message}", provider=provider.kind)
    return CliProviderError(
        f"claude failed: {message}",
        provider=provider.kind,
        exit_code=returncode,
        stderr_tail=stderr,
        retryable=status is not None and status >= 500,
        status_code=status,
    )


async def attempt(
    provider: LLMProvider, messages: list[Message], on_text: OnText | None
) -> Segment:
    """One ``claude -p`` run."""
    argv = build_argv(provider)
    # Claude Code retries on its own for minutes without network; keep it bounded.
    os.environ.setdefault("CLAUDE_CODE_MAX_RETRIES", "2")
    output = await run_cli(provider, argv, flatten_messages(messages))
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
        raise _error(provider, data, output.returncode, output.stderr_tail())
    text = str(data.get("result") or "")
    if on_text:
        on_text(text)
    usage = data.get("usage") or {}
    prompt_tokens = sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    cost = data.get("total_cost_usd")
    return Segment(
        text=text,
        finish_reason="stop",
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=int(usage.get("output_tokens") or 0),
            cost=float(cost) if cost is not None else None,
        ),
        response_id=data.get("session_id"),
    )
