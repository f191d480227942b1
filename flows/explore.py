"""Topic exploration: several producers ask LLMs for attributes of a topic at once.

Run it with ``llm-conductor explore`` or ``python -m flows.explore`` (same options).

The recipe: parse the routing config, open the topic folder (continuing what is there), start
the producers, and let each loop: build a prompt from a bounded sample of what is known, send
it through the router as an ``ask-for-attributes`` task, hand the answer to the orchestrator's
single ``Exploration`` for deduplication. A producer that crashes, or a provider that keeps
failing, stops only itself; outputs are flushed however the run ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from blocks.errors import InvalidOutput, ProviderError
from blocks.limits import estimate_tokens, limit_key
from blocks.llm_provider import LLMProvider, provider_from_env
from blocks.providers import PROVIDERS
from blocks.routing import Route, Router, call_with_routing, make_router, parse_routing_config
from blocks.tracing import traced_flow
from flows.interrupt import on_interrupt
from flows.logs import log_to_prefect
from flows.runtime import api_in_use, begin_command, prefect_runtime, run_flow
from tasks.attributes import MAX_WORDS, ParsedAnswer
from tasks.explore import (
    DEFAULT_MAX_TOKENS,
    Exploration,
    ExploreSettings,
    build_prompt,
    default_output_dir,
    explore_lock,
    prompt_echoes,
)
from tasks.limits import run_workers
from tasks.llm import ask_for_attributes
from tasks.semantic import DEFAULT_SEMANTIC_THRESHOLD, SemanticIndex, embedder
from tasks.stopping import stop_propagates, until_stopped

__all__ = ["ExploreSummary", "explore_topic", "explore_with", "run_explore", "run_exploration"]

logger = logging.getLogger("llm_conductor.explore")

#: A producer gives up after this many failed requests in a row (the others go on).
MAX_CONSECUTIVE_FAILURES = 5
_ARTIFACT_INTERVAL = 2.0
_TABLE_ROWS = 1000

#: Set by an in-process caller (the web page) to watch a run's events live.
explore_listener: contextvars.ContextVar[Callable[[str, dict[str, Any]], None] | None] = (
    contextvars.ContextVar("explore_listener", default=None)
)


class ExploreSummary(BaseModel):
    """What an exploration did; the flow's return value."""

    topic: str
    output_dir: str
    unique: int
    new_this_run: int
    batches: int
    requests: int
    failures: int
    duplicate_rate: float
    unique_per_minute: float
    cost: float
    #: False when some answer had no known price: ``cost`` is then a lower bound.
    cost_known: bool = True
    producers_stopped: int = 0
    interrupted: bool = False
    #: Lines of the answers that were not attributes, by reason.
    rejected: dict[str, int] = {}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.producers_stopped or (self.failures and not self.batches) else 0

    def line(self) -> str:
        stopped = (
            f", {self.producers_stopped} producer(s) stopped" if self.producers_stopped else ""
        )
        rejected = ""
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
            rejected = f"; rejected {sum(self.rejected.values())} lines ({reasons})"
        return (
            f"explore: {self.unique} unique attributes ({self.new_this_run} new) from "
            f"{self.batches} batches, {self.requests} requests, {self.failures} failed{stopped}; "
            f"duplicate rate {self.duplicate_rate:.0%}, {self.unique_per_minute:g}/min, "
            f"{self._cost()}{rejected}; in {self.output_dir}"
        )

    def _cost(self) -> str:
        if self.cost_known:
            return f"${self.cost:.4f}"
        # No price known for some answers: a bare "$0.0000" would claim they were free.
        return f"${self.cost:.4f} + unknown" if self.cost else "cost unknown"


@traced_flow  # one trace per flow run: every producer's LLM calls nest under it
@flow(
    name="Explore a topic",
    description="Concurrent producers ask LLMs for attributes of a topic; answers deduplicated.",
)
async def explore_topic(
    topic: str,
    producers: int = 5,
    iterations: int | None = None,
    max_requests: int | None = None,
    routing_strategy: str = "backoff",
    routing_config: str = "random:random",
    output: str | None = None,
    seed: int | None = None,
    fresh: bool = False,
    similarity: float | None = 92.0,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_words: int = MAX_WORDS,
    semantic_model: str | None = None,
    semantic_threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
) -> ExploreSummary:
    """Explore ``topic`` until ``iterations`` batches are accepted (or every producer has made
    ``max_requests``); outputs go to ``output`` (default ``./output/<topic-slug>/``)."""
    log_to_prefect()
    settings = ExploreSettings(
        topic=topic,
        producers=producers,
        iterations=iterations,
        max_requests=max_requests,
        routing_strategy=routing_strategy,
        routing_config=routing_config,
        similarity=similarity,
        seed=seed,
        max_tokens=max_tokens,
        max_words=max_words,
        semantic_model=semantic_model,
        semantic_threshold=semantic_threshold,
    )
    output_dir = Path(output) if output else default_output_dir(topic)
    # Stopped (Ctrl-C, the page's Stop): the flow run ends Cancelled, not Crashed.
    return await until_stopped(
        run_exploration(settings, output_dir, fresh=fresh, listener=explore_listener.get()),
        message="stopped: the exploration was interrupted; its files are flushed",
    )


def build_routes(settings: ExploreSettings) -> tuple[Router, dict[Route, LLMProvider]]:
    """The router and one provider block per route; key problems surface here, before any
    request (``NeedsKey`` names the variable)."""
    routes = parse_routing_config(settings.routing_config, known_providers=PROVIDERS)
    router = make_router(settings.routing_strategy, routes, seed=settings.seed)
    providers: dict[Route, LLMProvider] = {}
    for route in routes:
        options = {"seed": settings.seed or 0} if route.provider == "random" else None
        # The router retries and fails over; a retry loop inside each call would hide that.
        # A list cut at max_tokens is read as it is (its unfinished last line dropped): a
        # continuation costs a whole prompt again and small models answer it by repeating
        # the prompt.
        provider = provider_from_env(
            route.provider,
            model=route.model,
            retries=0,
            options=options,
            max_continuations=0,
            accept_truncated=True,
            max_tokens=settings.max_tokens,
        )
        provider.check_ready()
        providers[route] = provider
    if settings.semantic_model:
        embedder(settings.semantic_model)  # a bad name or a missing key, before any request
    return router, providers


async def run_exploration(
    settings: ExploreSettings,
    output_dir: Path,
    *,
    fresh: bool = False,
    listener: Callable[[str, dict[str, Any]], None] | None = None,
) -> ExploreSummary:
    """The orchestrator: owns the ``Exploration`` and runs the producers against it."""
    router, providers = build_routes(settings)
    with explore_lock(output_dir):
        return await _explore(settings, output_dir, router, providers, fresh, listener)


async def _explore(
    settings: ExploreSettings,
    output_dir: Path,
    router: Router,
    providers: dict[Route, LLMProvider],
    fresh: bool,
    listener: Callable[[str, dict[str, Any]], None] | None,
) -> ExploreSummary:
    exploration = Exploration.open(settings, output_dir, fresh=fresh)
    if settings.semantic_model:
        semantic = SemanticIndex(embedder(settings.semantic_model), settings.semantic_threshold)
        try:
            await semantic.add_known(r["attribute"] for r in exploration.records)
        except BaseException:
            exploration.close()
            raise
        exploration.semantic = semantic
    if listener is not None:
        exploration.listeners.append(listener)
    exploration.emit("started", _start_event(exploration))
    reporter = _ArtifactReporter(exploration)
    await reporter.start()
    stopped: list[int] = []
    main = asyncio.current_task()

    def interrupt() -> None:
        exploration.stopped = True  # no new request, even if the cancellation is swallowed
        if main is not None:
            main.cancel()

    try:
        # Producers are the workers of the routes' blocks' limits: each holds a slot of every
        # route's global limit while it runs, as a batch's workers do.
        workers, global_limits = await _plan_producers(settings.producers, providers)
        numbers = itertools.count()

        async def producer() -> None:
            await _produce(next(numbers), exploration, router, providers, reporter, stopped)

        with on_interrupt(interrupt):
            await run_workers(
                producer,
                workers,
                global_limits,
                pending=lambda: not exploration.stopped and not exploration.finished,
            )
    except asyncio.CancelledError:
        exploration.stopped = True
        raise
    finally:
        exploration.close()
        metrics = exploration.metrics()
        summary = ExploreSummary(
            topic=settings.topic,
            output_dir=str(output_dir),
            unique=metrics["unique"],
            new_this_run=metrics["new_this_run"],
            batches=metrics["batches"],
            requests=metrics["requests"],
            failures=metrics["failures"],
            duplicate_rate=metrics["duplicate_rate"],
            unique_per_minute=metrics["unique_per_minute"],
            cost=metrics["cost"],
            cost_known=metrics["cost_known"],
            producers_stopped=len(stopped),
            interrupted=exploration.stopped,
            rejected=metrics["rejected"],
        )
        exploration.emit("finished", summary.model_dump())
        await reporter.close(summary)
    if summary.interrupted:  # the cancellation was swallowed on the way: end as if it was not
        raise asyncio.CancelledError
    return summary


async def _plan_producers(
    requested: int, providers: dict[Route, LLMProvider]
) -> tuple[int, tuple[str, ...]]:
    """How many producers may run (each block's limit caps them) and the global limits each
    holds a slot of."""
    workers, global_limits = requested, set()
    for provider in {limit_key(p): p for p in providers.values()}.values():
        limits = await provider.gate().plan_run(provider, requested, option="--producers")
        workers = min(workers, limits.workers)
        global_limits.update(limits.global_limits)
    return workers, tuple(sorted(global_limits))


def _start_event(exploration: Exploration) -> dict[str, Any]:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run_id = str(context.flow_run.id) if context and context.flow_run else None
    return {
        "topic": exploration.settings.topic,
        "output_dir": str(exploration.output_dir),
        "settings": exploration.settings.__dict__,
        "flow_run_id": flow_run_id,
        "prefect_api_url": api_in_use() if flow_run_id else None,
        "known": [r["attribute"] for r in exploration.records],
        "metrics": exploration.metrics(),
    }


async def _produce(
    producer: int,
    exploration: Exploration,
    router: Router,
    providers: dict[Route, LLMProvider],
    reporter: _ArtifactReporter,
    stopped: list[int],
) -> None:
    """One producer's loop; its own failures never escape to the other producers."""
    limit = exploration.settings.max_requests
    requests = failures_in_a_row = 0
    try:
        while (limit is None or requests < limit) and exploration.reserve():
            requests += 1
            try:
                await _request(producer, requests, exploration, router, providers)
            except (ProviderError, InvalidOutput) as error:
                failures_in_a_row += 1
                logger.warning("producer %d: %s", producer, error)
                if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    logger.error(
                        "producer %d stops after %d failures in a row", producer, failures_in_a_row
                    )
                    stopped.append(producer)
                    return
                continue
            failures_in_a_row = 0
            await reporter.progress()
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a crashed producer must not take the others down
        logger.exception("producer %d crashed", producer)
        exploration.crashed(producer, error)
        stopped.append(producer)


async def _request(
    producer: int,
    request: int,
    exploration: Exploration,
    router: Router,
    providers: dict[Route, LLMProvider],
) -> None:
    """One request under a reserved iteration: accepted, or the iteration is given back."""
    accepted = False
    try:
        known = exploration.known_sample(producer, request)
        topic = exploration.settings.topic
        prompt = build_prompt(topic, known, len(exploration.index), producer, request)
        echoes = tuple(prompt_echoes(prompt, topic))
        max_words = exploration.settings.max_words

        async def ask(route: Route) -> tuple[Any, ParsedAnswer]:
            provider = providers[route]
            try:
                async with provider.gate().slot(estimate_tokens(prompt)):
                    return await stop_propagates(
                        ask_for_attributes(provider, prompt, echoes, max_words)
                    )
            except ProviderError as error:
                exploration.fail(route.label, producer, error)
                raise

        (completion, parsed), route = await call_with_routing(
            router, ask, max_attempts=3 + len(providers)
        )
        exploration.note_rejected(parsed.rejected)
        items = parsed.items
        if not items:
            error = InvalidOutput("the answer held no attributes")
            exploration.fail(route.label, producer, error)
            raise error
        if exploration.semantic is None:
            new = exploration.accept(items, completion, route.label, producer)
        else:
            async with exploration.semantic_lock:  # one answer at a time against the known
                same = await _same_meaning(exploration, items)
                new = exploration.accept(items, completion, route.label, producer, same)
        accepted = True
        logger.debug("producer %d via %s: %d items, %d new", producer, route, len(items), len(new))
    finally:
        if not accepted:
            exploration.release()


async def _same_meaning(exploration: Exploration, items: list[str]) -> set[str]:
    """The items that semantic dedup finds repeating a known attribute; a failed embeddings
    call only skips the check for this answer (strings still deduplicate it)."""
    assert exploration.semantic is not None
    new = [item for item in dict.fromkeys(items) if exploration.index.lookup(item) is None]
    if not new:
        return set()
    try:
        return set(await exploration.semantic.duplicates(new))
    except ProviderError as error:
        logger.warning("semantic dedup skipped for one answer: %s", error)
        return set()


class _ArtifactReporter:
    """Progress, metrics and attribute-table artifacts, only inside a flow run."""

    def __init__(self, exploration: Exploration) -> None:
        from prefect.context import FlowRunContext

        self.exploration = exploration
        self.enabled = FlowRunContext.get() is not None
        self._progress_id: Any = None
        self._last = 0.0

    def _percent(self) -> float:
        limit = self.exploration.settings.iterations
        if limit:
            return min(100.0, 100.0 * self.exploration.accepted / limit)
        return 0.0

    async def start(self) -> None:
        if self.enabled:
            from prefect.artifacts import acreate_progress_artifact

            self._progress_id = await acreate_progress_artifact(
                0.0, key="explore-progress", description="Accepted batches of --iterations"
            )

    async def progress(self, force: bool = False) -> None:
        if self._progress_id is None:
            return
        now = time.monotonic()
        if not force and now - self._last < _ARTIFACT_INTERVAL:
            return
        self._last = now
        from prefect.artifacts import aupdate_progress_artifact

        unique = len(self.exploration.records)
        await aupdate_progress_artifact(
            self._progress_id, self._percent(), description=f"{unique} unique attributes"
        )

    async def close(self, summary: ExploreSummary) -> None:
        if not self.enabled:
            return
        from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

        try:
            await self.progress(force=True)
            metrics = self.exploration.metrics()
            rows = "".join(f"| {k} | {v} |\n" for k, v in metrics.items())
            providers = "".join(
                f"| {route} | {s.requests} | {s.failures} | {s.unique} | {s.cost:.4f} |\n"
                for route, s in self.exploration.providers.items()
            )
            await acreate_markdown_artifact(
                f"# Exploration: {summary.topic}\n\n| metric | value |\n|---|---|\n{rows}\n"
                "| route | requests | failures | unique | cost |\n|---|---|---|---|---|\n"
                f"{providers}",
                key="explore-metrics",
                description=summary.line(),
            )
            records = self.exploration.records[-_TABLE_ROWS:]
            await acreate_table_artifact(
                records or [{"attribute": "-"}],
                key="explore-attributes",
                description=f"The last {len(records)} of {len(self.exploration.records)} "
                "unique attributes (all of them are in output.json)",
            )
        except Exception:  # artifacts are a view; the files are already flushed
            logger.warning("could not write the run's artifacts", exc_info=True)


def run_explore(settings: ExploreSettings, output_dir: Path | None, fresh: bool) -> ExploreSummary:
    """Check the settings and lock the topic folder, then run the flow (the CLI's entry
    point): usage errors and a folder in use are refused before Prefect starts."""
    settings.check()
    build_routes(settings)  # usage errors before Prefect starts
    if output_dir is None:
        output_dir = default_output_dir(settings.topic)  # a topic such as '???' names none
    begin_command()
    with explore_lock(output_dir), prefect_runtime():
        return run_flow(lambda: explore_with(settings, output_dir, fresh))


def explore_with(
    settings: ExploreSettings, output_dir: Path, fresh: bool = False
) -> Coroutine[Any, Any, ExploreSummary]:
    """The ``explore_topic`` flow call for ``settings`` (the CLI's and the web page's)."""
    return explore_topic(**dataclasses.asdict(settings), output=str(output_dir), fresh=fresh)


if __name__ == "__main__":
    import sys

    from flows.cli import main

    main(["explore", *sys.argv[1:]])
