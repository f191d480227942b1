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


async def wait_until_recorded(flow_run_id: str, task_runs: int, timeout: float = 180) -> int:
    """Wait (bounded, never failing) until the API has recorded ``task_runs`` task runs of the
    flow run; how many it has. A run of thousands of quick task runs keeps the API's database
    busy long after it ended, and the next test's flow run would wait for it."""
    import time

    from prefect.client.orchestration import get_client

    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            recorded = (await client._client.post("/task_runs/count", json=body)).json()
            if recorded >= task_runs or time.monotonic() > deadline:
                return recorded
            await asyncio.sleep(0.5)
