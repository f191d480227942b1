"""Retries are visible to Prefect although the block's loop is the only one.

Against the session's real Prefect server (``prefect_harness``) and the local OpenAI-compatible
server scripted to fail: each retry is a line in the flow run's log (provider, status, wait),
the attempts are in the ``batch-prompts`` artifact and in the task run's result, the count is in
``batch-summary``. Everything is read back through the Prefect API.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from blocks import LLMProvider
from flows.batch import run_batch
from flows.single import complete_prompt

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(300)]


def provider(server: Any, **kw: Any) -> LLMProvider:
    values: dict[str, Any] = dict(
        kind="openai",
        model="test-model",
        api_base=server.base_url,
        api_key="sk-x",
        backoff_base=0.0,
        timeout=10,
        retries=3,
    )
    values.update(kw)
    return LLMProvider(**values)


async def latest_flow_run() -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        [latest] = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        return latest


async def log_lines(flow_run_id: UUID, containing: str, expected: int) -> list[Any]:
    """The flow run's log records whose message contains ``containing``, once ``expected`` of
    them reached the API (logs are sent in batches: wait up to 60 s)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    found: list[Any] = []
    deadline = time.monotonic() + 60
    async with get_client() as client:
        while time.monotonic() < deadline:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            found = [log for log in logs if containing in log.message]
            if len(found) >= expected:
                break
            await asyncio.sleep(0.2)
    return found


async def artifacts(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


async def task_run_result(flow_run_id: UUID, name: str) -> Any:
    """The persisted result of the flow run's task run ``name``, read through the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        deadline = time.monotonic() + 60
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            [run] = [r for r in runs if r.name == name] or [None]
            if run is not None and run.state is not None and run.state.is_final():
                break
            assert time.monotonic() < deadline, f"task run {name} not final: {runs}"
            await asyncio.sleep(0.2)
    assert run.run_count == 1, "Prefect ran it once: the retries are the block's"
    return await run.state.aresult()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_batch_retries_are_in_the_log_artifacts_and_task_result(llm_server, tmp_path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b", "c"):
        write(src / f"{name}.md.prompt.md", f"prompt {name}")
    # One at a time, in name order: a gets a 429 (Retry-After 0.05 s) and a 503, then answers.
    llm_server.enqueue(429, retry_after=0.05)
    llm_server.enqueue(503)
    summary = run_batch(provider(llm_server), src, out, parallelism=1)
    assert (summary.ok, summary.failed, summary.retries) == (3, 0, 2)
    assert ", 2 retries," in summary.line()

    flow_run = asyncio.run(latest_flow_run())
    lines = asyncio.run(log_lines(flow_run.id, "retry ", 2))
    messages = sorted(line.message for line in lines)
    assert len(messages) == 2, messages
    assert messages[0].startswith("openai: status 429, retry 1/3 in 0.05s: "), messages
    assert messages[1].startswith("openai: status 503, retry 2/3 in 0.00s: "), messages
    assert all(line.task_run_id is not None for line in lines), "logged by the task run"

    found = asyncio.run(artifacts(flow_run.id))
    assert "| Retries (429, 5xx, timeouts, empty answers) | 2 |" in found["batch-summary"].data
    table = found["batch-prompts"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert sorted((r["file"], r["attempts"], r["retries"]) for r in rows) == [
        ("a.md.prompt.md", 3, 2),
        ("b.md.prompt.md", 1, 0),
        ("c.md.prompt.md", 1, 0),
    ]
    result = asyncio.run(task_run_result(flow_run.id, "a.md.prompt.md"))
    assert result.completion.attempts == 3


def test_a_prompt_that_runs_out_of_retries_reports_its_attempts(llm_server, tmp_path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "a.md.prompt.md", "prompt a")
    llm_server.enqueue(500, times=3)
    summary = run_batch(provider(llm_server, retries=2), src, out)
    assert (summary.ok, summary.failed, summary.retries) == (0, 1, 2)
    flow_run = asyncio.run(latest_flow_run())
    table = asyncio.run(artifacts(flow_run.id))["batch-prompts"].data
    [row] = json.loads(table) if isinstance(table, str) else table
    assert (row["status"], row["attempts"], row["retries"]) == ("failed", 3, 2)


def test_a_single_prompt_flow_logs_its_retries(llm_server) -> None:
    llm_server.enqueue("empty")
    completion = asyncio.run(complete_prompt("hello", provider(llm_server)))
    assert completion.attempts == 2
    flow_run = asyncio.run(latest_flow_run())
    [line] = asyncio.run(log_lines(flow_run.id, "retry ", 1))
    assert line.message.startswith("openai: EmptyResponse, retry 1/3 in 0.00s: "), line.message
    assert line.level == 30  # WARNING: shown under Prefect's default and quiet log levels
