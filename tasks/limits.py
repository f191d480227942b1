"""The worker pool of a run under its provider's global concurrency limit.

The limits themselves are the block's (blocks/limits.py, ``LLMProvider.gate()``); here, how
a run's workers hold slots of the global limit (when a Prefect server has one) while they
work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

__all__ = ["run_workers"]


async def _limit_slots(names: Sequence[str]) -> tuple[int, int]:
    """The smallest size of the limits (the server refuses, 422, a request for more than
    one's size) and the fewest free slots among them."""
    from prefect.client.orchestration import get_client

    sizes, free = [], []
    async with get_client() as client:
        for name in names:
            limit = await client.read_global_concurrency_limit_by_name(name)
            sizes.append(limit.limit)
            free.append(max(0, limit.limit - limit.active_slots))
    return min(sizes), min(free)


def _refused_for_now(error: BaseException) -> bool:
    """A slot request the server turned down because the limit is full (423 Locked)."""
    import httpx

    cause = error.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


async def run_workers(
    worker: Callable[[], Coroutine[Any, Any, None]],
    count: int,
    global_limits: Sequence[str],
    pending: Callable[[], bool],
) -> None:
    """Run ``count`` copies of ``worker``; with global limits (``RunLimits.global_limits``),
    each only while holding a slot of every one of them.

    Slots are acquired in chunks, all ``count`` in one call first: every acquire is a round
    trip of 55-290 ms and Prefect sends those for one limit one at a time (NOTES.md), so a
    slot per worker would delay the last worker by seconds. A chunk asks for no more than
    the slots free just before (one read) and makes one attempt; refused (another run took
    them meanwhile), it is halved, down to single slots that wait as long as it takes. No
    time-out is ever put on a request for slots: one that expired after the server granted
    them would leave them held by a lease nobody renews, for its 5 minutes. Workers already
    holding slots keep going; once the work has run out, requests still waiting are
    cancelled (measured: a run sharing a limit ends 0.6-2 s sooner). No more workers run
    than the smallest limit's size (``ProviderGate.plan_run`` has said so already when the
    run asked for more).
    """
    if not global_limits:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())
        return
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency

    waiting: set[asyncio.Task[None]] = set()  # requests for slots not granted yet

    names = list(global_limits)

    async def chunk(size: int, ready: asyncio.Event) -> None:
        attempts = None if size == 1 else 0  # max_retries: 0 = no waiting for a 423
        try:
            async with concurrency(names, occupy=size, max_retries=attempts, strict=True):
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

    total, free = await _limit_slots(global_limits)
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
                free = (await _limit_slots(global_limits))[1]
