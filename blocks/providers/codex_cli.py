"""The ``codex`` CLI: ``codex exec --json --skip-git-repo-check --ephemeral -s read-only -``.

It prints JSONL events; the answer is the last ``item.completed`` of type ``agent_message``,
usage comes with ``turn.completed``; ``turn.failed`` and ``error`` events carry failures. It
reports no cost, so cost stays unknown. Without credentials and network it hangs: the hard
timeout in ``run_cli`` is what ends it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from blocks.errors import AuthenticationFailed, CliProviderError, RateLimited
from blocks.providers.base import Message, OnText, Segment
from blocks.providers.cli_common import executable, flatten_messages, run_cli
from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["attempt", "build_argv", "parse_events"]


def build_argv(provider: LLMProvider) -> list[str]:
    argv = [executable(provider), "exec", "--json", "--skip-git-repo-check", "--ephemeral"]
    argv += ["-s", "read-only"]
    if provider.model_name:
        argv += ["-m", provider.model_name]
    if provider.reasoning_effort:
        argv += ["-c", f'model_reasoning_effort="{provider.reasoning_effort}"']
    return [*argv, "-"]


def parse_events(stdout: str) -> tuple[str | None, dict[str, Any], str | None, str | None]:
    """(answer, usage, thread id, error message) from codex's JSONL output."""
    answer: str | None = None
    usage: dict[str, Any] = {}
    thread_id = error = None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # codex may interleave plain log lines
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if kind == "thread.started":
            thread_id = event.get("thread_id")
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message":
                answer = str(item.get("text") or "")
        elif kind == "turn.completed":
            usage = event.get("usage") or {}
        elif kind == "turn.failed":
            error = str((event.get("error") or {}).get("message") or "turn failed")
        elif kind == "error":
            error = str(event.get("message") or "error")
    return answer, usage, thread_id, error


def _failure(provider: LLMProvider, message: str, returncode: int, stderr: str) -> Exception:
    lowered = message.lower()
    if "401" in lowered or "unauthorized" in lowered or "login" in lowered:
        return AuthenticationFailed(
            f"codex is not logged in or its key is invalid: {message} (run `codex login`)",
            provider=provider.kind,
            status_code=401,
        )
    if "429" in lowered or "rate limit" in lowered:
        return RateLimited(f"codex: {message}", provider=provider.kind)
    return CliProviderError(
        f"codex failed: {message}",
        provider=provider.kind,
        exit_code=returncode,
        stderr_tail=stderr,
        retryable=any(code in lowered for code in ("500", "502", "503", "overloaded")),
    )


async def attempt(
    provider: LLMProvider, messages: list[Message], on_text: OnText | None
) -> Segment:
    """One ``codex exec`` run."""
    output = await run_cli(provider, build_argv(provider), flatten_messages(messages))
    answer, usage, thread_id, error = parse_events(output.stdout)
    if error or output.returncode != 0 or answer is None:
        message = error or output.stderr_tail() or f"exited {output.returncode} without an answer"
        raise _failure(provider, " ".join(message.split()), output.returncode, output.stderr_tail())
    if on_text:
        on_text(answer)
    return Segment(
        text=answer,
        finish_reason="stop",
        usage=Usage(
            prompt_tokens=int(usage.get("input_tokens") or 0),
            completion_tokens=int(usage.get("output_tokens") or 0),
            cost=None,
        ),
        response_id=thread_id,
    )
