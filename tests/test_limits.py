"""tasks.limits.run_workers against a real (temporary) Prefect API and its global limits."""

from __future__ import annotations

import asyncio
import collections

import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import concurrency

import tasks.limits as limits
from blocks.llm_provider import LLMProvider

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def active_slots(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(name)).active_slots


@pytest.mark.parametrize("stale_read", [False, True], ids=["fresh-read", "stale-read"])
def test_a_run_gets_the_free_slot_and_ends_while_another_run_holds_the_rest(
    monkeypatch, stale_read
):
    """Another run holds 2 of the block's 3 slots for the whole time. This run works through
    its queue on the one free slot, never more, and ends while the other still holds its two;
    no slot stays taken afterwards, and once the work ran out no further slot is taken (the
    request still waiting is cancelled, not granted to a worker with nothing to do). With a
    stale read of the free slots its first request (all 3) is refused, and it falls back to
    single slots."""
    provider = LLMProvider(kind="random", model=f"limits-{stale_read}", parallelism=3)
    queue = collections.deque(range(12))
    done: list[int] = []
    running = peak = started = 0

    async def worker() -> None:
        nonlocal running, peak, started
        started += 1
        while queue:
            item = queue.popleft()
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            done.append(item)

    if stale_read:
        real = limits._limit_slots

        async def all_free(names: list[str]) -> tuple[int, int]:
            total, _free = await real(names)
            return total, total

        monkeypatch.setattr(limits, "_limit_slots", all_free)

    async def go() -> tuple[int, int]:
        (name,) = (await provider.gate().plan_run(provider, None)).global_limits
        async with concurrency(name, occupy=2, strict=True):  # the other run
            work = limits.run_workers(worker, 8, [name], pending=lambda: bool(queue))
            await asyncio.wait_for(work, 60)  # a liveness bound, not a speed check
            during = await active_slots(name)
        for _ in range(300):  # a cancelled request's slot, if granted, is given back
            if (after := await active_slots(name)) == 0:
                break
            await asyncio.sleep(0.1)
        return during, after

    during, after = asyncio.run(go())
    assert sorted(done) == list(range(12))
    assert peak == 1
    assert started == 1  # one slot came free for this run, and one worker ran on it
    assert (during, after) == (2, 0)
