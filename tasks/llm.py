"""The task that performs one LLM call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from blocks.retry import retry_log
from tasks.attributes import MAX_WORDS, ParsedAnswer, parse_answer
from tasks.complete import complete, stream_to_stdout
from tasks.stopping import until_stopped

__all__ = [
    "ask",
    "ask_for_attributes",
    "call_model",
    "complete",
    "retries_in_run_log",
    "stream_to_stdout",
]


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
    with retries_in_run_log():
        return await until_stopped(complete(provider, prompt, stream))


async def ask(
    provider: LLMProvider,
    prompt: str,
    echoes: tuple[str, ...] = (),
    max_words: int = MAX_WORDS,
) -> tuple[Completion, ParsedAnswer]:
    """One exploration request without Prefect: the completion and the attributes read from
    it (``parse_answer``: lines repeating ``echoes``, sentences and lines of more than
    ``max_words`` words are rejected; an answer cut at max_tokens loses its last line)."""
    with retries_in_run_log():
        completion = await provider.acomplete(prompt)
    parsed = parse_answer(
        completion.text,
        max_words=max_words,
        echoes=echoes,
        truncated=completion.finish_reason == "length",
    )
    return completion, parsed


@task(name="ask-for-attributes", task_run_name="ask {provider.kind}", retries=0)
async def ask_for_attributes(
    provider: LLMProvider,
    prompt: str,
    echoes: tuple[str, ...] = (),
    max_words: int = MAX_WORDS,
) -> tuple[Completion, ParsedAnswer]:
    """One exploration request: the completion and the attributes read from it (``ask``).

    Numbered or bulleted lines, comma lists and JSON arrays are all understood. Stopped
    mid-call, the task run ends Cancelled (await it through ``stop_propagates``).

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider
        from tasks.llm import ask_for_attributes

        @flow
        async def one() -> list[str]:
            _, parsed = await ask_for_attributes(LLMProvider(kind="random"), "List of rivers")
            return parsed.items
        ```
    """
    return await until_stopped(ask(provider, prompt, echoes, max_words))
