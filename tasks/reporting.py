"""Progress of a batch: terminal (bar on a TTY, plain lines otherwise) and Prefect artifacts;
and the markdown of a single prompt's answer (its flow run's artifact)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from blocks.result import Completion

__all__ = [
    "BatchReporter",
    "BatchSummary",
    "PromptOutcome",
    "answer_markdown",
    "end_startup",
    "startup_status",
]

logger = logging.getLogger("llm_conductor.batch")
_ARTIFACT_INTERVAL = 2.0  # seconds between progress-artifact updates: each is an API call


_startup: Any = None  # the spinner shown while Prefect starts, until the progress bar


@contextlib.contextmanager
def startup_status(message: str = "starting Prefect...") -> Iterator[None]:
    """On a terminal, a spinner saying what the command waits for (importing Prefect, starting
    its API, the flow run) until the batch's progress bar replaces it."""
    global _startup
    if _startup is None and sys.stderr.isatty():
        from rich.console import Console

        _startup = Console(stderr=True).status(message)
        _startup.start()
    try:
        yield
    finally:
        end_startup()


def end_startup() -> None:
    global _startup
    if _startup is not None:
        _startup.stop()
        _startup = None


class PromptOutcome(BaseModel):
    """How one prompt ended. Tokens and cost are what this run paid for it, a rejected
    answer's included; a cached answer paid nothing and took no model time."""

    file: str
    status: str  # ok | failed | up-to-date | not-started
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    seconds: float = 0.0
    #: Calls sent for this prompt, and how many of them were retries (429, 5xx, timeouts,
    #: empty answers): the block's retry loop is the only one, so Prefect sees one task run.
    attempts: int = 0
    retries: int = 0
    error: str | None = None
    #: The token counts are litellm's estimate (the server reported none).
    usage_estimated: bool = False

    @property
    def cost_unknown(self) -> bool:
        """Tokens were paid for (or an answer came) but nobody knows their price."""
        paid = self.prompt_tokens or self.completion_tokens or self.status == "ok"
        return self.cost is None and bool(paid) and not self.cached


class BatchSummary(BaseModel):
    """What a batch run did; the flow's return value."""

    total: int = 0
    ok: int = 0
    #: Of ``ok``: answers read back from the answer cache (no call, no cost).
    cached: int = 0
    failed: int = 0
    up_to_date: int = 0
    not_started: int = 0
    #: Listed in ``--files-from`` but no longer there: warned about, not failed.
    missing: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    #: Some token counts are litellm's estimates, not the server's.
    tokens_estimated: bool = False
    retries: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    #: Every prompt that was not up to date, as in the ``batch-prompts`` artifact.
    prompts: list[PromptOutcome] = Field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def line(self) -> str:
        cost = f"${self.cost:.4f}" + ("" if self.cost_known else " (some costs unknown)")
        ok = f"{self.ok} ok" + (f" ({self.cached} cached)" if self.cached else "")
        parts = [ok, f"{self.failed} failed", f"{self.up_to_date} up to date"]
        if self.not_started:
            parts.append(f"{self.not_started} not started (budget reached)")
        if self.missing:
            parts.append(f"{self.missing} listed but missing (skipped)")
        retries = ""
        if self.retries:
            retries = f", {self.retries} {'retry' if self.retries == 1 else 'retries'}"
        return (
            f"batch: {self.total} prompts: {', '.join(parts)}; "
            f"{self.prompt_tokens + self.completion_tokens:,} tokens{self._estimated()}, "
            f"{cost}{retries}, "
            f"{self.seconds:.1f}s"
        )

    def markdown(self) -> str:
        rows = [
            ("Prompts", self.total),
            ("Generated", self.ok),
            ("Of which cached (no cost)", self.cached),
            ("Failed", self.failed),
            ("Up to date (skipped)", self.up_to_date),
            ("Not started (budget)", self.not_started),
            ("Retries (429, 5xx, timeouts, empty answers)", self.retries),
            ("Prompt tokens", f"{self.prompt_tokens:,}" + self._estimated()),
            ("Completion tokens", f"{self.completion_tokens:,}" + self._estimated()),
            ("Cost (USD)", f"{self.cost:.4f}" + ("" if self.cost_known else " + unknown")),
            ("Duration (s)", f"{self.seconds:.1f}"),
        ]
        return "# Batch summary\n\n| | |\n|---|---|\n" + "".join(
            f"| {name} | {value} |\n" for name, value in rows
        )

    def _estimated(self) -> str:
        return " (some estimated)" if self.tokens_estimated else ""


class BatchReporter:
    """Counts outcomes and shows them; artifact calls only happen inside a flow run.

    ``jobs`` is how many outcomes move the ``[n/N]`` counter and the progress: every prompt
    that runs and every prompt file that could not be used (up-to-date and not-started
    prompts do not move it).
    """

    def __init__(self, jobs: int, *, tty: bool | None = None, artifacts: bool = True) -> None:
        self.summary = BatchSummary()
        self.outcomes: list[PromptOutcome] = []
        self.jobs = jobs
        self.done = 0
        self._started = time.monotonic()
        self._tty = sys.stderr.isatty() if tty is None else tty
        self._artifacts = artifacts and _in_flow_run()
        self._progress_id: Any = None
        self._last_artifact = 0.0
        self._bar: Any = None
        self._task: Any = None

    async def start(self) -> None:
        end_startup()
        if self._tty and self.jobs:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[tokens]:,} tok  ${task.fields[cost]:.4f}"),
                transient=False,
            )
            self._task = self._bar.add_task("batch", total=self.jobs, tokens=0, cost=0.0)
            self._bar.start()
        if self._artifacts:
            from prefect.artifacts import acreate_progress_artifact

            self._progress_id = await acreate_progress_artifact(
                0.0, key="batch-progress", description="Prompts finished in this run"
            )

    async def record(self, outcome: PromptOutcome) -> None:
        s = self.summary
        s.total += 1
        self.outcomes.append(outcome)
        if outcome.status == "up-to-date":
            s.up_to_date += 1
            return
        if outcome.status == "not-started":
            s.not_started += 1
            return
        self.done += 1
        s.retries += outcome.retries
        if outcome.status == "ok":
            s.ok += 1
            s.cached += outcome.cached
        else:
            s.failed += 1
        s.prompt_tokens += outcome.prompt_tokens
        s.completion_tokens += outcome.completion_tokens
        s.tokens_estimated = s.tokens_estimated or outcome.usage_estimated
        if outcome.cost is not None:
            s.cost += outcome.cost
        elif outcome.cost_unknown:
            s.cost_known = False
        if self._bar is not None:
            tokens = s.prompt_tokens + s.completion_tokens
            self._bar.update(self._task, advance=1, tokens=tokens, cost=s.cost)
            if outcome.status == "failed":
                self._bar.console.print(f"[red]failed[/red] {outcome.file}: {outcome.error}")
        elif outcome.status == "ok" and outcome.cached:
            logger.info("ok %s (cached, no cost) [%d/%d]", outcome.file, self.done, self.jobs)
        elif outcome.status == "ok":
            logger.info(
                "ok %s (%d tokens, %.2fs) [%d/%d]",
                outcome.file,
                outcome.prompt_tokens + outcome.completion_tokens,
                outcome.seconds,
                self.done,
                self.jobs,
            )
        else:
            tokens = outcome.prompt_tokens + outcome.completion_tokens
            paid = f" ({tokens:,} tokens paid)" if tokens else ""
            logger.warning(
                "failed %s: %s%s [%d/%d]", outcome.file, outcome.error, paid, self.done, self.jobs
            )
        await self._update_artifact()

    async def _update_artifact(self, force: bool = False) -> None:
        if self._progress_id is None or not self.jobs:
            return
        now = time.monotonic()
        if not force and now - self._last_artifact < _ARTIFACT_INTERVAL:
            return
        self._last_artifact = now
        from prefect.artifacts import aupdate_progress_artifact

        await aupdate_progress_artifact(self._progress_id, 100.0 * self.done / self.jobs)

    async def close(self) -> BatchSummary:
        self.summary.seconds = time.monotonic() - self._started
        self.summary.prompts = [o for o in self.outcomes if o.status != "up-to-date"]
        if self._bar is not None:
            self._bar.stop()
        if self._artifacts:
            from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

            await self._update_artifact(force=True)
            await acreate_markdown_artifact(
                self.summary.markdown(), key="batch-summary", description=self.summary.line()
            )
            table = [o.model_dump() for o in self.summary.prompts]
            await acreate_table_artifact(
                table or [{"file": "-", "status": "nothing to do"}],
                key="batch-prompts",
                description="Per prompt: file, status, cached, tokens, cost, seconds, attempts, "
                "retries, error",
            )
        return self.summary


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def answer_markdown(completion: Completion) -> str:
    """The answer as markdown: the text verbatim in a fence no line of it can close, then
    provider, model, tokens and cost."""
    longest = max((len(run) for run in re.findall(r"`+", completion.text)), default=0)
    fence = "`" * max(3, longest + 1)
    cost = "unknown" if completion.cost is None else f"${completion.cost:.6f}"
    return (
        f"# Answer\n\n{fence}text\n{completion.text.rstrip(chr(10))}\n{fence}\n\n"
        "| provider | model | prompt tokens | completion tokens | cost |\n|---|---|---|---|---|\n"
        f"| {completion.provider} | {completion.model} | {completion.prompt_tokens} "
        f"| {completion.completion_tokens} | {cost} |\n"
    )
