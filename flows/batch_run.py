"""Running a batch: check the input, plan, and start the flow only when there is work.

The CLI's and the Python API's entry points. Everything that can be refused is refused
before Prefect starts: the folders, the output folder's lock (held by the command for the
whole run, so a second run on it is told at once), the provider's readiness. Without a
Prefect API configured, a rerun with nothing to do is answered from the plan alone (prompt
files against the manifest), without importing Prefect (≈1.1 s) or connecting to a server;
the flow itself is in flows/batch.py, the API it uses comes from flows/runtime.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from blocks.config import ProviderConfig
from blocks.errors import ConductorError, UsageError
from blocks.limits import estimate_tokens
from flows.runtime import begin_command, configured_api_url, prefect_runtime, run_flow
from tasks.batch import BatchPlan, plan_batch, warn_missing
from tasks.manifest import STATE_DIR, BatchLock, Manifest
from tasks.prompt_files import read_prompt
from tasks.reporting import BatchSummary, startup_status

__all__ = ["dry_run", "estimate_plan", "run_batch", "run_batch_mode"]

logger = logging.getLogger("llm_conductor.batch")


def _check_dirs(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise UsageError(f"input dir {input_dir} does not exist or is not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".{STATE_DIR}-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"output dir {output_dir} is not writable: {error.strerror}") from None


def estimate_plan(plan: BatchPlan, provider: ProviderConfig) -> tuple[int, float | None]:
    """Prompt tokens of the jobs and, when litellm knows the model's price, their input cost."""
    tokens = 0
    for job in plan.jobs:
        with contextlib.suppress(ConductorError):
            tokens += estimate_tokens(read_prompt(job.prompt)[1])
    price: float | None = None
    if provider.spec.backend == "random":
        price = 0.0
    elif provider.spec.backend == "litellm":
        from blocks.providers.litellm_backend import _litellm, litellm_model

        info = _litellm().model_cost.get(litellm_model(provider)) or _litellm().model_cost.get(
            provider.model_name
        )
        price = info.get("input_cost_per_token") if info else None
    return tokens, (tokens * price if price is not None else None)


def dry_run(plan: BatchPlan, provider: ProviderConfig) -> None:
    """Print what would run (to stdout: it is the command's output)."""
    for job in plan.jobs:
        print(f"would run  {job.prompt.relative}  ({job.reason})")
    for problem in plan.problems:
        print(f"problem    {problem}")
    for missing in plan.missing:
        print(f"missing    {missing} (skipped)")
    tokens, cost = estimate_plan(plan, provider)
    cost_text = f"${cost:.4f} for input" if cost is not None else "cost unknown for this model"
    print(
        f"dry run: {len(plan.jobs)} to run, {len(plan.up_to_date)} up to date, "
        f"{len(plan.problems)} problems; ~{tokens:,} prompt tokens, {cost_text} "
        f"(answers not included), provider {provider.label}"
    )


def run_batch(
    provider: ProviderConfig,
    input_dir: Path,
    output_dir: Path,
    *,
    recursive: bool = False,
    parallelism: int | None = None,
    force: bool = False,
    retry_errors: bool = False,
    files_from: list[str] | None = None,
    max_cost: float | None = None,
    dry: bool = False,
    task_per_prompt: bool = True,
    time_budget: float | None = None,
) -> BatchSummary:
    """Check the input, then run the flow; the CLI's and ``run_batch_mode``'s entry point.

    ``provider`` may be the configuration alone; the block is made when there is work.
    Without a configured Prefect API, a run with nothing to do returns before Prefect is
    imported (≈1.1 s) or a server connected, so a no-op rerun stays fast.
    """
    if parallelism is not None and parallelism < 1:
        raise UsageError(f"--parallelism must be at least 1, got {parallelism}")
    if max_cost is not None and max_cost <= 0:
        raise UsageError(f"--max-cost must be positive, got {max_cost}")
    if time_budget is not None and time_budget <= 0:
        raise UsageError(f"--time-budget must be positive, got {time_budget:g}")
    _check_dirs(input_dir, output_dir)
    begin_command()
    options = {"recursive": recursive, "files_from": files_from, "retry_errors": retry_errors}
    if dry:
        plan = plan_batch(
            provider, input_dir, output_dir, Manifest.open(output_dir), force=force, **options
        )
        dry_run(plan, provider)
        return BatchSummary(total=plan.total, up_to_date=len(plan.up_to_date))
    with BatchLock(output_dir) as lock:
        if not configured_api_url():
            plan = plan_batch(
                provider, input_dir, output_dir, Manifest.open(output_dir), force=force, **options
            )
            if not plan.jobs and not plan.problems:
                warn_missing(plan)  # else the flow warns, after planning again
                return BatchSummary(
                    total=plan.total, up_to_date=len(plan.up_to_date), missing=len(plan.missing)
                )
        provider.check_ready()
        from blocks.llm_provider import LLMProvider
        from flows.batch import run_prompt_batch

        block = LLMProvider.from_config(provider)

        async def flow_run() -> BatchSummary:
            state = await run_prompt_batch(
                input_dir,
                output_dir,
                block,
                parallelism=parallelism,
                force=force,
                max_cost=max_cost,
                task_per_prompt=task_per_prompt,
                time_budget=time_budget,
                return_state=True,
                **options,
            )
            # Failed when a prompt failed: the summary is its result all the same.
            result = await state.aresult(raise_on_failure=False)
            if isinstance(result, BaseException):
                raise result
            return result

        # A spinner on a terminal meanwhile: importing Prefect and connecting take seconds.
        with startup_status(), prefect_runtime(), lock.handed_down():
            return run_flow(flow_run)


def run_batch_mode(
    provider: ProviderConfig,
    prompt_files: Iterable[Path | str] | None = None,
    parallelism: int | None = None,
    verbose: bool = False,
    force: bool = False,
    input_dir: Path | None = None,
    output_dir: Path | None = None,
    recursive: bool = False,
) -> int:
    """The seed llm-conductor's Python API: run a batch and return the exit code.

    Positional arguments in the seed's order; ``prompt_files`` None scans ``input_dir``.
    """
    from flows.logs import configure_logging

    configure_logging(verbose)
    try:
        if input_dir is None or output_dir is None:
            raise UsageError("input_dir and output_dir are required")
        summary = run_batch(
            provider,
            Path(input_dir),
            Path(output_dir),
            recursive=recursive,
            parallelism=parallelism,
            force=force,
            files_from=None if prompt_files is None else [str(p) for p in prompt_files],
        )
    except UsageError as error:
        logger.error("%s", error)
        return 2
    except ConductorError as error:
        logger.error("%s", error)
        return 1
    logger.info("%s", summary.line())
    return summary.exit_code
