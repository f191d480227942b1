"""Per-provider limits inside one process: requests in flight, requests/min, tokens/min.

A gate lives on one event loop (asyncio primitives are bound to the loop that first uses
them), so ``gate_for`` keeps one per provider configuration and loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["ProviderGate", "estimate_tokens", "gate_for"]


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate (about 4 characters per token) for budgeting only."""
    return max(1, len(text) // 4)


class ProviderGate:
    """Admission control for one provider: a semaphore plus optional rate limiters."""

    def __init__(
        self,
        max_in_flight: int,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._requests = AsyncLimiter(requests_per_minute, 60) if requests_per_minute else None
        self._tokens = AsyncLimiter(tokens_per_minute, 60) if tokens_per_minute else None
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[None]:
        """Wait for a free slot and the rate budget, then hold the slot for one call."""
        async with self._slots:
            if self._requests:
                await self._requests.acquire()
            if self._tokens and estimated_tokens:
                await self._tokens.acquire(min(estimated_tokens, self._tokens.max_rate))
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    async def spend_tokens(self, actual: int, estimated: int) -> None:
        """Charge the tokens/minute budget for what a call used beyond its estimate."""
        if self._tokens and actual > estimated:
            await self._tokens.acquire(min(actual - estimated, self._tokens.max_rate))


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, ProviderGate]] = (
    weakref.WeakKeyDictionary()
)


def gate_for(provider: LLMProvider, max_in_flight: int | None = None) -> ProviderGate:
    """The gate shared by every call to ``provider`` on the running loop."""
    limit = max_in_flight or provider.max_in_flight
    key = (provider.label, provider.resolved_api_base(), limit)
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    if key not in gates:
        gates[key] = ProviderGate(limit, provider.requests_per_minute, provider.tokens_per_minute)
    return gates[key]


def global_limit_name(provider: LLMProvider) -> str:
    """The Prefect global concurrency limit shared by every run using this provider."""
    slug = "".join(c if c.isalnum() else "-" for c in provider.label.lower()).strip("-")
    return f"llm-provider-{slug}"


async def global_limit(provider: LLMProvider) -> str | None:
    """The name of the provider's Prefect global concurrency limit, created on first use
    with the block's max in flight (and set back to it when it differs: the block is where
    the limit is configured); None without a Prefect API other commands share (then the
    in-process gate is the only limit)."""
    from flows.runtime import api_in_use

    if not api_in_use(shared=True):
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = global_limit_name(provider)
    async with get_client() as client:
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=provider.max_in_flight)
                )
        else:
            if existing.limit != provider.max_in_flight:
                await client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=provider.max_in_flight)
                )
    return name


async def _limit_slots(limit_name: str) -> tuple[int, int]:
    """The limit's size (the server refuses, 422, a request for more) and its free slots."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(limit_name)
    return limit.limit, max(0, limit.limit - limit.active_slots)


def _refused_for_now(error: BaseException) -> bool:
    """A slot request the server turned down because the limit is full (423 Locked)."""
    import httpx

    cause = error.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


async def run_workers(
    worker: Callable[[], Awaitable[None]],
    count: int,
    limit_name: str | None,
    pending: Callable[[], bool],
) -> None:
    """Run ``count`` copies of ``worker``; with a global limit, each only while holding a slot.

    Slots are acquired in chunks, all ``count`` in one call first: every acquire is a round
    trip of 55-290 ms and Prefect sends those for one limit one at a time (NOTES.md), so a
    slot per worker would delay the last worker by seconds. A chunk asks for no more than
    the slots free just before (one read) and makes one attempt; refused (another run took
    them meanwhile), it is halved, down to single slots that wait as long as it takes. No
    time-out is ever put on a request for slots: one that expired after the server granted
    them would leave them held by a lease nobody renews, for its 5 minutes. Workers already
    holding slots keep going; once the work has run out, requests still waiting are
    cancelled (measured: a run sharing a limit ends 0.6-2 s sooner). No more workers run
    than the limit's size (``-j`` above the block's limit is capped by it when a server is
    configured).
    """
    if limit_name is None:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())
        return
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency

    waiting: set[asyncio.Task[None]] = set()  # requests for slots not granted yet

    async def chunk(size: int, ready: asyncio.Event) -> None:
        attempts = None if size == 1 else 0  # max_retries: 0 = no waiting for a 423
        try:
            async with concurrency(limit_name, occupy=size, max_retries=attempts, strict=True):
                ready.set()
                waiting.discard(asyncio.current_task())  # type: ignore[arg-type]
                async with asyncio.TaskGroup() as group:
                    for _ in range(size):
                        group.create_task(worker())
                if not pending():
                    # The work ran out: a request still waiting for a slot would hold this
                    # run up until one comes free, only to start a worker with nothing to
                    # do. Prefect gives back a slot granted to a cancelled request.
                    for other in list(waiting):
                        other.cancel()
        except ConcurrencySlotAcquisitionError as error:
            if ready.is_set() or not _refused_for_now(error):
                raise

    total, free = await _limit_slots(limit_name)
    count = min(count, max(1, total))
    async with asyncio.TaskGroup() as group:
        remaining = size = count
        while remaining and pending():
            size = max(1, min(size, remaining, free))
            ready = asyncio.Event()
            attempt = group.create_task(chunk(size, ready))
            waiting.add(attempt)
            attempt.add_done_callback(waiting.discard)
            signal = asyncio.create_task(ready.wait())
            await asyncio.wait({attempt, signal}, return_when=asyncio.FIRST_COMPLETED)
            signal.cancel()
            if ready.is_set():
                remaining -= size
            else:
                size = max(1, size // 2)
            if remaining and pending() and size > 1:
                free = (await _limit_slots(limit_name))[1]
