"""Read back what the last flow run recorded: its state, and its task runs once the API has
them all."""

from __future__ import annotations

import asyncio


async def latest_task_runs(expected: int, settled: bool = True) -> list[tuple[str, str]]:
    """(name, state type) of the newest flow run's task runs, sorted.

    Task runs reach the API as events and are recorded shortly after the flow run ends, so
    this waits (up to 60 s: a busy machine records them late) for ``expected`` of them, all in
    a final state when ``settled``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        [latest] = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[latest.id]))
        for _ in range(600):
            runs = await client.read_task_runs(flow_run_filter=flow_runs)
            final = all(r.state is not None and r.state.is_final() for r in runs)
            if len(runs) >= expected and (final or not settled):
                break
            await asyncio.sleep(0.1)
    return sorted((r.name, r.state.type.value if r.state else "NONE") for r in runs)


async def latest_flow_run_state() -> str:
    """The state type of the newest flow run (``CANCELLED``, ``CRASHED``, ...)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        [latest] = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
    return latest.state.type.value if latest.state else "NONE"
