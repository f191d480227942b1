"""The batch flow: every changed ``*.prompt.md`` file -> its output file.

Run it with ``llm-conductor batch`` or ``python -m flows.batch`` (same options).

The recipe: take the output folder's lock, plan (which prompts changed), run the changed ones
through the cached ``generate-output`` task with at most ``parallelism`` in flight, write each
output atomically as soon as it is ready, record it in the manifest, report. With
``task_per_prompt=False`` each of the ``parallelism`` workers is one task run instead, with the
same answer cache (see tasks/generate.py).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from prefect import flow
from prefect.states import Completed, Failed, State

from blocks.errors import ConductorError, InvalidOutput, ProviderError
from blocks.limits import ProviderGate, RunLimits, estimate_tokens
from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from blocks.tracing import traced_flow

# The entry points, re-exported: they live in flows/batch_run.py, which plans before it
# imports Prefect.
from flows.batch_run import run_batch, run_batch_mode
from flows.interrupt import on_interrupt, stop_requested
from flows.logs import FILE_ONLY, NOT_ON_STDERR, log_to_prefect
from flows.parameters import names_missing_blocks
from tasks.batch import BatchPlan, Job, plan_batch, warn_missing
from tasks.generate import (
    GeneratedOutput,
    answer_cache,
    generate_in_task_run,
    generate_output,
    generate_output_cached,
    work_through_prompts,
)
from tasks.limits import run_workers
from tasks.manifest import STATE_DIR, BatchLock, Entry, Manifest
from tasks.outputs import write_atomic
from tasks.prompt_files import read_prompt
from tasks.reporting import BatchReporter, BatchSummary, PromptOutcome
from tasks.stopping import stop_propagates

__all__ = ["run_batch", "run_batch_mode", "run_prompt_batch"]
logger = logging.getLogger("llm_conductor.batch")

#: ``generate_output`` (a task run per prompt) or ``generate_output_cached`` (none), with the
#: output folder's ``scope`` bound.
Generate = Callable[..., Awaitable[GeneratedOutput]]


@names_missing_blocks
@traced_flow  # one trace per flow run: the LLM calls' spans nest under it
@flow(
    name="Run prompt batch",
    description="Generate the output of every changed *.prompt.md file.",
    log_prints=False,
)
async def run_prompt_batch(
    input_dir: Path,
    output_dir: Path,
    provider: LLMProvider,
    recursive: bool = False,
    parallelism: int | None = None,
    force: bool = False,
    retry_errors: bool = False,
    files_from: list[str] | None = None,
    max_cost: float | None = None,
    task_per_prompt: bool = True,
    time_budget: float | None = None,
) -> BatchSummary:
    """Generate outputs for changed prompts; returns counts, tokens, cost and duration.

    The flow run ends *Failed* when a prompt failed, *Completed* otherwise, with the message
    "N ok, M failed, K up to date" either way (a Prefect automation on Failed can notify);
    the summary is the state's result in both cases.

    ``task_per_prompt=False``: one task run per worker instead of per prompt, for fast
    providers and big batches, where Prefect's per-task-run cost is what limits the pace.
    ``time_budget``: seconds from the flow run's start after which no prompt is started
    (those in flight finish; the rest are "not started"), e.g. to end before a CI job's
    time-out with every paid answer written.
    """
    log_to_prefect()
    deadline = time.monotonic() + time_budget if time_budget is not None else None
    output_dir.mkdir(parents=True, exist_ok=True)
    with BatchLock(output_dir):
        manifest = Manifest.open(output_dir)
        plan = plan_batch(
            provider,
            input_dir,
            output_dir,
            manifest,
            recursive=recursive,
            files_from=files_from,
            force=force,
            retry_errors=retry_errors,
        )
        summary = await execute_plan(
            plan,
            provider,
            output_dir,
            manifest,
            parallelism,
            force,
            max_cost,
            task_per_prompt,
            deadline=deadline,
        )
    logger.info("%s", summary.line(), extra=NOT_ON_STDERR)  # the CLI prints it itself
    return cast(BatchSummary, final_state(summary))


def final_state(summary: BatchSummary) -> State:
    """The flow run's end: Failed if a prompt failed, with the counts as its message."""
    message = f"{summary.ok} ok, {summary.failed} failed, {summary.up_to_date} up to date"
    if summary.not_started:
        message += f", {summary.not_started} not started (budget reached)"
    if summary.failed:
        return Failed(message=message, data=summary)
    return Completed(message=message, data=summary)


async def execute_plan(
    plan: BatchPlan,
    provider: LLMProvider,
    output_dir: Path,
    manifest: Manifest,
    parallelism: int | None,
    force: bool,
    max_cost: float | None,
    task_per_prompt: bool = True,
    *,
    deadline: float | None = None,
) -> BatchSummary:
    """Run the plan's jobs with ``parallelism`` workers (at most the block's limit); every
    outcome is reported. No job starts once ``max_cost`` is spent or after ``deadline``
    (``time.monotonic()``)."""
    gate = provider.gate()
    limits = await gate.plan_run(provider, parallelism) if plan.jobs else RunLimits(1)
    workers = min(limits.workers, max(1, len(plan.jobs)))
    reasons = collections.Counter(job.reason for job in plan.jobs)
    logger.debug(
        "plan: %d to run %s, %d up to date, %d problems, %d missing; %d workers on %s, %s",
        len(plan.jobs),
        dict(reasons),
        len(plan.up_to_date),
        len(plan.problems),
        len(plan.missing),
        workers,
        provider.label,
        "a task run per prompt" if task_per_prompt else "a task run per worker",
        extra=FILE_ONLY,
    )
    # Problem files are outcomes too: the counter runs over them and the jobs.
    reporter = BatchReporter(len(plan.jobs) + len(plan.problems))
    await reporter.start()
    warn_missing(plan)
    reporter.summary.missing = len(plan.missing)
    for problem in plan.problems:
        await reporter.record(
            PromptOutcome(file=_problem_file(problem), status="failed", error=str(problem))
        )
    for prompt in plan.up_to_date:
        await reporter.record(PromptOutcome(file=str(prompt.relative), status="up-to-date"))
    # Persisted answers go to Prefect's result storage (PREFECT_LOCAL_STORAGE_PATH), keyed
    # by prompt key: a rerun after a crash between answer and write costs nothing.
    # ``scope`` (the output folder) is part of every cache key: resolved once, not per prompt.
    scope = str(output_dir.resolve())
    generate: Generate
    if task_per_prompt:
        per_prompt = generate_output.with_options(refresh_cache=force) if force else generate_output
        generate = functools.partial(generate_in_task_run, per_prompt, scope=scope)
    else:
        cache = await answer_cache()
        generate = functools.partial(generate_output_cached, cache, scope=scope, refresh=force)
    queue = collections.deque(plan.jobs)

    async def work() -> None:
        while queue and not stop_requested():
            job = queue.popleft()
            over_budget = max_cost is not None and reporter.summary.cost >= max_cost
            if over_budget or (deadline is not None and time.monotonic() >= deadline):
                outcome = PromptOutcome(file=str(job.prompt.relative), status="not-started")
            else:
                outcome = await run_job(job, provider, output_dir, manifest, generate, gate)
            await reporter.record(outcome)

    numbers = itertools.count(1)

    async def worker() -> None:
        if task_per_prompt:
            await work()
        else:
            await stop_propagates(work_through_prompts(next(numbers), work))

    main = asyncio.current_task()

    def interrupt() -> None:
        reporter.summary.interrupted = True
        queue.clear()  # nothing new starts, even if something swallows the cancellation
        if main is not None:
            main.cancel()

    try:
        with on_interrupt(interrupt):
            await run_workers(worker, workers, limits.global_limits, pending=lambda: bool(queue))
    except asyncio.CancelledError:
        reporter.summary.interrupted = True
        raise
    finally:
        manifest.compact()
        summary = await reporter.close()
    if summary.interrupted:  # the cancellation was swallowed on the way: end as if it was not
        raise asyncio.CancelledError
    return summary


async def run_job(
    job: Job,
    provider: LLMProvider,
    output_dir: Path,
    manifest: Manifest,
    generate: Generate,
    gate: ProviderGate,
) -> PromptOutcome:
    """One prompt: read, generate (cached), write atomically, record. Never raises for a
    failure of this prompt alone, so one bad prompt cannot stop the others."""
    name = str(job.prompt.relative)
    paid: Completion | None = None  # an answer this run paid for, written or not
    try:
        _raw, text = read_prompt(job.prompt)
        estimate = estimate_tokens(text)
        async with gate.slot(estimate):
            generated = await generate(provider, text, job.key, job.output_format, name)
        completion = generated.completion
        if not generated.cached:
            paid = completion
            await gate.spend_tokens(completion.usage.total_tokens, estimate)
        _log_answer(name, job, generated)
        output = job.prompt.output_path(output_dir, generated.is_json)
        write_atomic(output, generated.text)
    except (ConductorError, OSError) as error:
        attempts = error.attempts if isinstance(error, ProviderError) else 0
        message = " ".join(str(error).split())
        paid = paid or getattr(error, "completion", None)
        if isinstance(error, InvalidOutput) and error.answer is not None:
            kept = output_dir / STATE_DIR / "rejected" / f"{name}.txt"
            write_atomic(kept, error.answer)
            message += f" (answer kept in {kept.relative_to(output_dir)})"
        manifest.record(Entry.failed(name, job.key, message, paid=paid))
        return _outcome(name, "failed", paid, error=message, attempts=attempts)
    relative = str(output.relative_to(output_dir))
    manifest.record(Entry.succeeded(name, job.key, relative, completion, cached=paid is None))
    return _outcome(name, "ok", paid)


def _log_answer(name: str, job: Job, generated: GeneratedOutput) -> None:
    completion = generated.completion
    if generated.cached:
        logger.debug("%s: answer for key %s read from the cache", name, job.key, extra=FILE_ONLY)
        return
    logger.debug(
        "%s (%s, key %s): %d+%d tokens, cost %s, %d attempt(s), %d segment(s), "
        "finish_reason %s, response %s, %.2fs",
        name,
        job.reason,
        job.key,
        completion.prompt_tokens,
        completion.completion_tokens,
        "unknown" if completion.cost is None else f"${completion.cost:.6f}",
        completion.attempts,
        completion.segments,
        completion.finish_reason,
        completion.response_id,
        completion.elapsed,
        extra=FILE_ONLY,
    )


def _outcome(
    name: str,
    status: str,
    paid: Completion | None,
    error: str | None = None,
    attempts: int = 0,
) -> PromptOutcome:
    """What a prompt cost this run: ``paid``'s usage and attempts, or nothing but the
    ``attempts`` of a call that failed (an ok one without ``paid`` was cached)."""
    if paid is None:
        return PromptOutcome(
            file=name,
            status=status,
            cached=status == "ok",
            cost=0.0,
            error=error,
            attempts=attempts,
            retries=max(0, attempts - 1),
        )
    return PromptOutcome(
        file=name,
        status=status,
        prompt_tokens=paid.prompt_tokens,
        completion_tokens=paid.completion_tokens,
        cost=paid.cost,
        seconds=round(paid.elapsed, 3),
        error=error,
        usage_estimated=paid.usage.estimated,
        attempts=paid.attempts,
        retries=paid.attempts - paid.segments,
    )


def _problem_file(problem: Exception) -> str:
    return str(getattr(problem, "path", "") or problem).split(":")[0]


if __name__ == "__main__":
    import sys

    from flows.cli import main

    main(["batch", *sys.argv[1:]])
