"""The task that performs one LLM call."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from blocks.retry import retry_log
from tasks.attributes import parse_attributes
from tasks.stopping import until_stopped

__all__ = [
    "ask",
    "ask_for_attributes",
    "call_model",
    "complete",
    "retries_in_run_log",
    "stream_to_stdout",
]

logger = logging.getLogger("llm_conductor.tasks")


@contextlib.contextmanager
def retries_in_run_log() -> Iterator[None]:
    """Inside a Prefect flow or task run, every retry of the calls made here is a WARNING line
    in that run's log (provider, status, wait): Prefect itself sees one attempt, since the
    block's retry loop is the only one. Outside a run, nothing changes."""
    try:
        run_logger = get_run_logger()
    except MissingContextError:
        yield
        return
    token = retry_log.set(run_logger)
    try:
        yield
    finally:
        retry_log.reset(token)


def stream_to_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def complete(provider: LLMProvider, prompt: str, stream: bool = False) -> Completion:
    """Complete ``prompt`` with ``provider``; with ``stream`` the answer goes to stdout as it
    comes. The body of ``call_model``, usable without Prefect."""
    with retries_in_run_log():
        completion = await provider.acomplete(prompt, on_text=stream_to_stdout if stream else None)
    logger.debug(
        "%s answered in %.2fs: %d+%d tokens, %s segment(s), %s attempt(s)",
        provider.label,
        completion.elapsed,
        completion.prompt_tokens,
        completion.completion_tokens,
        completion.segments,
        completion.attempts,
    )
    return completion


@task(name="call-model", task_run_name="call {provider.kind}", retries=0)
async def call_model(provider: LLMProvider, prompt: str, stream: bool = False) -> Completion:
    """Complete ``prompt`` with ``provider``; with ``stream`` the answer goes to stdout as it comes.

    Retries live in the provider block (one loop that honours Retry-After), so the task itself
    is not retried: a second loop here would multiply attempts. Stopped mid-call, the task run
    ends Cancelled (await it through ``tasks.stopping.stop_propagates``).

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider
        from tasks.llm import call_model

        @flow
        async def ask() -> str:
            completion = await call_model(LLMProvider(kind="random"), "Name three rivers")
            return completion.text
        ```
    """
    return await until_stopped(complete(provider, prompt, stream))


async def ask(provider: LLMProvider, prompt: str) -> tuple[Completion, list[str]]:
    """One exploration request without Prefect: the completion and its parsed attributes."""
    with retries_in_run_log():
        completion = await provider.acomplete(prompt)
    return completion, parse_attributes(completion.text)


@task(name="ask-for-attributes", task_run_name="ask {provider.kind}", retries=0)
async def ask_for_attributes(provider: LLMProvider, prompt: str) -> tuple[Completion, list[str]]:
    """One exploration request: the completion and the attributes parsed from it.

    Numbered or bulleted lines, comma lists and JSON arrays are all understood. Stopped
    mid-call, the task run ends Cancelled (await it through ``stop_propagates``).

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider
        from tasks.llm import ask_for_attributes

        @flow
        async def one() -> list[str]:
            _, items = await ask_for_attributes(LLMProvider(kind="random"), "List of rivers")
            return items
        ```
    """
    return await until_stopped(ask(provider, prompt))
