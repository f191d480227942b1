"""The ``codex`` CLI (codex-cli 0.171): ``codex exec --json --skip-git-repo-check --ephemeral
-s read-only --disable shell_snapshot [-m M] [-c model_reasoning_effort="E"] -``.

It prints JSONL events: ``thread.started``, ``turn.started``, ``item.completed`` (the answer is
the last ``agent_message``; an item of type ``error`` is a warning such as "Model metadata for
`m` not found"), ``turn.completed`` with usage, or ``turn.failed``. Top-level ``error`` events
are notices ("Reconnecting... 1/5 (...)", "Falling back from WebSockets...") that may well be
followed by ``turn.completed`` and exit 0: only ``turn.failed``, or a non-zero exit without an
answer, is a failure. It reports no cost, so cost stays unknown, and no Retry-After.

Offline or without a usable provider it reconnects for minutes ("Reconnecting... waiting for
network"): that notice ends the attempt at once. Without ``--disable shell_snapshot`` it writes
its environment to world-readable ``$CODEX_HOME/shell_snapshots/*.sh``; the environment it gets
is an allow-list anyway (``child_env``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocks.errors import (
    AuthenticationFailed,
    CliProviderError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from blocks.providers.base import Message, OnText, Segment
from blocks.providers.cli_common import (
    LineWatcher,
    child_env,
    executable,
    flatten_messages,
    run_cli,
)
from blocks.result import Usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from blocks.llm_provider import LLMProvider

__all__ = ["ENV_NAMES", "CodexRun", "attempt", "build_argv", "classify", "parse_events"]

#: What codex reads besides ``cli_common.BASE_ENV`` (plus every ``env_key`` its config names).
ENV_NAMES = frozenset(
    {"OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_ORGANIZATION", "OPENAI_PROJECT", "RUST_LOG"}
)
ENV_PREFIXES = ("CODEX_",)

_STATUS = re.compile(r"\bstatus:? (\d{3})\b")
_AUTH_TEXTS = ("unauthorized", "forbidden", "missing environment variable", "not logged in")
_RATE_TEXTS = ("too many requests", "rate limit")
_TRANSIENT_TEXTS = (
    "high demand",  # its text for a 5xx
    "stream disconnected before completion",
    "waiting for network",
    "connection failed",
    "error sending request",
    "timed out",
    "overloaded",
)
_TRUNCATED = re.compile(r"incomplete response returned, reason: max_(output_)?tokens", re.I)


def build_argv(provider: LLMProvider) -> list[str]:
    argv = [executable(provider), "exec", "--json", "--skip-git-repo-check", "--ephemeral"]
    argv += ["-s", "read-only", "--disable", "shell_snapshot"]
    if provider.model_name:
        argv += ["-m", provider.model_name]
    if provider.reasoning_effort:
        argv += ["-c", f'model_reasoning_effort="{provider.reasoning_effort}"']
    return [*argv, "-"]


def config_env_keys(environ: Mapping[str, str] | None = None) -> set[str]:
    """The key variables named by ``env_key`` in ``$CODEX_HOME/config.toml``: a provider
    configured there must get its key, whatever the variable is called."""
    environ = os.environ if environ is None else environ
    home = Path(environ.get("CODEX_HOME") or Path(environ.get("HOME", "~")) / ".codex")
    try:
        config = tomllib.loads((home.expanduser() / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()  # codex reports a broken config itself
    providers = config.get("model_providers")
    if not isinstance(providers, dict):
        return set()
    return {
        p["env_key"]
        for p in providers.values()
        if isinstance(p, dict) and isinstance(p.get("env_key"), str)
    }


@dataclass
class CodexRun:
    """What codex's JSONL said."""

    answer: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    thread_id: str | None = None
    completed: bool = False
    #: The ``turn.failed`` message.
    failure: str | None = None
    #: Top-level ``error`` events: notices, fatal only when the turn failed.
    notices: list[str] = field(default_factory=list)


def _event(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None  # codex may interleave plain log lines
    return event if isinstance(event, dict) else None


def parse_events(stdout: str) -> CodexRun:
    run = CodexRun()
    for line in stdout.splitlines():
        event = _event(line)
        if event is None:
            continue
        kind = event.get("type")
        if kind == "thread.started":
            run.thread_id = event.get("thread_id")
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message":
                run.answer = str(item.get("text") or "")
        elif kind == "turn.completed":
            run.completed = True
            run.usage = event.get("usage") or {}
        elif kind == "turn.failed":
            run.failure = " ".join(
                str((event.get("error") or {}).get("message") or "turn failed").split()
            )
        elif kind == "error":
            run.notices.append(" ".join(str(event.get("message") or "").split()))
    return run


def _watch(provider: LLMProvider) -> LineWatcher:
    def watch(line: str) -> ProviderError | None:
        event = _event(line)
        if event and event.get("type") == "error":
            message = " ".join(str(event.get("message") or "").split())
            if "waiting for network" in message.lower():
                return ProviderUnavailable(
                    f"codex cannot reach its model provider ({message}); is this machine "
                    "online and codex configured (`codex login`, or a model provider in "
                    "$CODEX_HOME/config.toml)?",
                    provider=provider.kind,
                )
        return None

    return watch


def classify(provider: LLMProvider, message: str, returncode: int, stderr: str) -> ProviderError:
    """The error for a failed codex run: the HTTP status when its text has one, else the
    texts codex is known to print; anything unknown is not retried."""
    lowered = message.lower()
    match = _STATUS.search(message)
    status = int(match.group(1)) if match else None
    kind = provider.kind
    if status in (401, 403) or (status is None and any(t in lowered for t in _AUTH_TEXTS)):
        return AuthenticationFailed(
            f"codex is not logged in or its key is invalid: {message} (run `codex login`, or "
            "set the key variable its model provider names)",
            provider=kind,
            status_code=status,
        )
    if status == 429 or (status is None and any(t in lowered for t in _RATE_TEXTS)):
        return RateLimited(f"codex: {message}", provider=kind)
    if (status is not None and status >= 500) or (
        status is None and any(t in lowered for t in _TRANSIENT_TEXTS)
    ):
        return ProviderUnavailable(f"codex: {message}", provider=kind, status_code=status)
    return CliProviderError(
        f"codex failed: {message}",
        provider=kind,
        exit_code=returncode,
        stderr_tail=stderr,
        status_code=status,
    )


def _is_warning(line: str) -> bool:
    return line.lstrip().upper().startswith(("WARNING", "WARN "))


async def attempt(
    provider: LLMProvider, messages: list[Message], on_text: OnText | None
) -> Segment:
    """One ``codex exec`` run."""
    env = child_env(provider, names=ENV_NAMES | config_env_keys(), prefixes=ENV_PREFIXES)
    output = await run_cli(
        provider, build_argv(provider), flatten_messages(messages), env=env, watch=_watch(provider)
    )
    run = parse_events(output.stdout)
    stderr = output.stderr_tail(skip=_is_warning)  # codex's own warnings are not our error
    usage = Usage(
        prompt_tokens=int(run.usage.get("input_tokens") or 0),
        completion_tokens=int(run.usage.get("output_tokens") or 0),
        cost=None,
    )
    if run.failure and run.answer is not None and _TRUNCATED.search(run.failure):
        # Cut off at the token limit: the partial answer goes to the shared continuation path.
        finish_reason = "length"
    elif run.failure or (output.returncode != 0 and run.answer is None):
        notice = run.notices[-1] if run.notices else ""
        message = run.failure or stderr or notice or f"exited {output.returncode} without an answer"
        raise classify(provider, message, output.returncode, stderr)
    else:
        finish_reason = "stop"
    answer = run.answer or ""
    if on_text and answer:
        on_text(answer)
    return Segment(text=answer, finish_reason=finish_reason, usage=usage, response_id=run.thread_id)
