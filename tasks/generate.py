"""The batch's unit of work: one prompt -> one validated output text, cached by prompt key.

Two ways to run it, same cache: ``generate_output`` is one Prefect task run per prompt;
``work_through_prompts`` is one task run per worker, whose prompts go through
``generate_output_cached`` (the task's body and the task's result store, without a task run
each), for batches where Prefect's per-task-run cost, not the provider, sets the pace.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.results import ResultStore, get_result_store
from pydantic import BaseModel

from blocks.errors import InvalidOutput
from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from tasks.llm import retries_in_run_log
from tasks.outputs import output_metadata, render_output
from tasks.stopping import STOPPED, until_stopped

__all__ = [
    "GeneratedOutput",
    "answer_cache",
    "generate",
    "generate_in_task_run",
    "generate_output",
    "generate_output_cached",
    "work_through_prompts",
]


class GeneratedOutput(BaseModel):
    """A completion and the file text rendered from it (what the cache persists)."""

    completion: Completion
    text: str
    is_json: bool
    #: Read back from the answer cache: nothing was sent or paid for in this run (always
    #: False in the cache itself; set on the copy a cache hit returns).
    cached: bool = False


def cache_key(scope: str, key: str) -> str:
    # Scoped to the output folder: the cache exists to resume *this* job, and an identical
    # prompt elsewhere should not silently reuse an answer (use --force semantics there).
    return "llm-conductor-" + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


def _by_prompt_key(context: TaskRunContext, parameters: dict[str, object]) -> str:
    return cache_key(str(parameters["scope"]), str(parameters["key"]))


@task(
    name="generate-output",
    task_run_name="{name}",
    cache_key_fn=_by_prompt_key,
    persist_result=True,
    retries=0,
)
async def generate_output(
    provider: LLMProvider, prompt: str, key: str, output_format: str, name: str, scope: str = ""
) -> GeneratedOutput:
    """Ask the model and render the output file's text; fails (and caches nothing) when the
    answer does not fit ``output_format``.

    The result is persisted under the prompt key, so a run killed after the model answered
    but before the file was written gets the answer back from the cache instead of paying
    again. ``scope`` (the output folder) is part of the cache key; ``name`` only labels the
    task run. Retries happen inside the provider block (one loop, honouring Retry-After).
    Stopped, the task run ends Cancelled and caches nothing; await it through
    ``tasks.stopping.stop_propagates``.

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider
        from tasks.generate import generate_output
        from tasks.stopping import stop_propagates

        @flow
        async def one() -> str:
            out = await stop_propagates(generate_output(
                LLMProvider(kind="random"), "Give me JSON", "k1", "json", "demo"
            ))
            return out.text
        ```
    """
    return await until_stopped(generate(provider, prompt, key, output_format))


async def generate(
    provider: LLMProvider, prompt: str, key: str, output_format: str
) -> GeneratedOutput:
    """The body of ``generate_output``, without Prefect and without the cache."""
    with retries_in_run_log():
        completion = await provider.acomplete(prompt)
    try:
        text, is_json = render_output(
            completion.text, output_format, key, output_metadata(completion, provider)
        )
    except InvalidOutput as error:
        raise InvalidOutput(str(error), completion=completion) from None
    return GeneratedOutput(completion=completion, text=text, is_json=is_json)


async def generate_in_task_run(
    task_: Task[..., Awaitable[GeneratedOutput]], *args: Any, **kwargs: Any
) -> GeneratedOutput:
    """Call ``generate_output`` (``task_``: it, or it with options) as a task run of its own;
    an answer Prefect served from its cache comes back marked ``cached``.

    A stopped task run cancels the caller, as ``tasks.stopping.stop_propagates`` does.
    """
    state = await task_(*args, **kwargs, return_state=True)
    if state.is_cancelled():
        raise asyncio.CancelledError(STOPPED)
    output: GeneratedOutput = await state.aresult()
    # Prefect names the state of a task run whose result came from the cache "Cached".
    return output.model_copy(update={"cached": True}) if state.name == "Cached" else output


async def answer_cache() -> ResultStore:
    """The result store ``generate_output`` caches answers in, for the current flow run."""
    return await get_result_store().aupdate_for_task(generate_output)


async def generate_output_cached(
    cache: ResultStore,
    provider: LLMProvider,
    prompt: str,
    key: str,
    output_format: str,
    name: str,
    scope: str = "",
    *,
    refresh: bool = False,
) -> GeneratedOutput:
    """``generate_output`` without a task run of its own, for use inside a running task.

    It reads and writes the records ``generate_output`` caches (``cache`` is
    ``answer_cache()``, same keys), so an answer saved by either is found by both; ``refresh``
    is ``refresh_cache`` (``--force``). The store's synchronous methods on purpose: its async
    ones hop to a worker thread several times per record and cost 3x the CPU (measured).
    """
    storage_key = cache_key(scope, key)
    if not refresh and cache.exists(storage_key):
        hit: GeneratedOutput = cache.read(storage_key).result
        return hit.model_copy(update={"cached": True})
    output = await generate(provider, prompt, key, output_format)
    cache.write(output, key=storage_key)
    return output


# NO_CACHE: the default policy would hash ``work`` (a closure over the whole queue) per run.
@task(
    name="work-through-prompts",
    task_run_name="worker {number}",
    cache_policy=NO_CACHE,
    retries=0,
)
async def work_through_prompts(number: int, work: Callable[[], Awaitable[None]]) -> None:
    """One batch worker as one task run: ``work`` takes prompts off the shared queue until it
    is empty. Each prompt's outcome is in the run's artifacts and the manifest, not in a task
    run of its own. Stopped, the task run ends Cancelled."""
    return await until_stopped(work())
