"""README's "Composing in your own flows" example, run as written against a Prefect server.

The example's code block is saved as a script and run in a temporary folder holding a copy of
``examples/prompts``, pointed at the session's real Prefect server; what it made (flow runs,
the batch as a subflow run, task runs) is read back through the API.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(360)]

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Composing in your own flows\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the section has no python block"
    return match.group(1)


def api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


async def runs_of(flow_name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
        )


async def task_runs_of(flow_run_id: Any, expected: int) -> list[tuple[str, str]]:
    """(name, state) of the flow run's task runs, once ``expected`` are final (they reach the
    API as events, recorded a little later: up to 60 s on a busy machine)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= expected or time.monotonic() > deadline:
                return sorted((r.name, r.state.type.value) for r in final)
            await asyncio.sleep(0.2)


def test_the_composition_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    shutil.copytree(ROOT / "examples" / "prompts", tmp_path / "examples" / "prompts")
    env = {**os.environ, "PREFECT_API_URL": api_url(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    prompts = list((ROOT / "examples" / "prompts").rglob("*.prompt.md"))
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{len(prompts)} written; ")
    assert lines[-1] == "2 outputs"
    written = [
        p
        for p in (tmp_path / "composed-outputs").rglob("*")
        if p.is_file() and ".llm-conductor" not in p.parts
    ]
    assert len(written) == len(prompts)

    [nightly] = asyncio.run(runs_of("nightly"))[:1]
    [batch] = asyncio.run(runs_of("Run prompt batch"))[:1]
    assert nightly.state.is_completed() and batch.state.is_completed()
    assert batch.parent_task_run_id is not None, "the batch ran as a subflow"
    # The subflow shows up as a task run of its parent too, besides call_model's.
    nightly_tasks = asyncio.run(task_runs_of(nightly.id, 2))
    assert ("call random", "COMPLETED") in nightly_tasks, nightly_tasks
    [fan_out] = asyncio.run(runs_of("fan-out"))[:1]
    assert asyncio.run(task_runs_of(fan_out.id, 2)) == [
        ("prompt-0", "COMPLETED"),
        ("prompt-1", "COMPLETED"),
    ]


def test_mapping_without_unmapped_provider_fails_as_readme_says() -> None:
    from prefect import flow
    from prefect.exceptions import MappingLengthMismatch

    from blocks import LLMProvider
    from tasks.generate import generate_output

    @flow
    def mapped_wrong() -> None:
        generate_output.map(LLMProvider(kind="random"), ["a", "b"], ["k1", "k2"], "md", ["x", "y"])

    with pytest.raises(MappingLengthMismatch):
        mapped_wrong()
