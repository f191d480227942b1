"""The block's limits (blocks/limits.py) and the worker pool (tasks/limits.py) against a real
(temporary) Prefect API and its global concurrency limits."""

from __future__ import annotations

import ast
import asyncio
import collections
import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.asyncio import concurrency

import tasks.limits as limits
from blocks.limits import limit_key
from blocks.llm_provider import LLMProvider
from flows.batch_run import run_batch

CLI = str(Path(sys.executable).parent / "llm-conductor")

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


# -- the block's limit: key, size, UI edits, -j, every flow ------------------------------------


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


async def limit_size(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(name)).limit


async def edit_in_the_ui(name: str, size: int, *, create: bool = False) -> None:
    """What the UI's Concurrency page sends: create a limit, or change its size."""
    async with get_client() as client:
        if create:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=size)
            )
        else:
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=size)
            )


async def saved_block(name: str, **fields) -> LLMProvider:
    await LLMProvider(**fields).asave(name, overwrite=True)
    return await LLMProvider.aload(name)


def prompts(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"p{i:02}.prompt.md").write_text(f"prompt {i}")
    return folder


def test_each_saved_block_has_its_own_limit_and_a_run_leaves_the_others_alone(tmp_path):
    """Two saved blocks of one kind and model: each run creates its block's own limit at the
    block's value, and a run with the other block no longer resizes it (it turned 4 into 32)."""
    model, small_name, big_name = unique("model"), unique("small"), unique("big")

    async def go() -> tuple[LLMProvider, LLMProvider]:
        small = await saved_block(small_name, kind="random", model=model, parallelism=4)
        big = await saved_block(big_name, kind="random", model=model, parallelism=32)
        return small, big

    small, big = asyncio.run(go())
    src = prompts(tmp_path / "in", 2)
    run_batch(small, src, tmp_path / "a")
    run_batch(big, src, tmp_path / "b")
    sizes = [
        asyncio.run(limit_size(f"llm-provider-block-{name}")) for name in (small_name, big_name)
    ]
    assert sizes == [4, 32]


def test_unsaved_blocks_share_a_limit_only_for_one_model_at_one_endpoint():
    model = unique("model")
    here = LLMProvider(kind="openai", model=model, api_base="http://127.0.0.1:8000/v1")
    same = LLMProvider(kind="openai", model=model, api_base="http://127.0.0.1:8000/v1")
    there = LLMProvider(kind="openai", model=model, api_base="http://127.0.0.1:9000/v1")
    keys = {limit_key(here), limit_key(same), limit_key(there)}
    assert keys == {
        f"llm-provider-openai-{model}-at-127-0-0-1-8000-v1",
        f"llm-provider-openai-{model}-at-127-0-0-1-9000-v1",
    }


@pytest.mark.timeout(360)  # a real process / Prefect slot waits on a busy machine
def test_a_limit_edited_in_the_ui_stays_until_the_block_changes(tmp_path, llm_server):
    """The run creates the block's limit at 4; the user lowers it to 2 in the UI; the next
    run with the same block keeps 2 (and never has more than 2 requests in flight); once
    the block's parallelism becomes 6, the run sets the limit to 6."""
    name = unique("edited")
    limit = f"llm-provider-block-{name}"
    fields = dict(
        kind="openai",
        model=unique("model"),
        api_base=llm_server.base_url,
        api_key="sk-x",
        timeout=30,
        backoff_base=0.0,
    )
    src = prompts(tmp_path / "in", 6)
    block = asyncio.run(saved_block(name, parallelism=4, **fields))
    run_batch(block, src, tmp_path / "first", task_per_prompt=False)
    assert asyncio.run(limit_size(limit)) == 4

    asyncio.run(edit_in_the_ui(limit, 2))
    llm_server.reset()
    llm_server.latency = 0.1
    summary = run_batch(block, src, tmp_path / "second", task_per_prompt=False)
    assert summary.ok == 6
    assert asyncio.run(limit_size(limit)) == 2
    assert llm_server.max_in_flight <= 2

    block = asyncio.run(saved_block(name, parallelism=6, **fields))
    run_batch(block, src, tmp_path / "third", task_per_prompt=False)
    assert asyncio.run(limit_size(limit)) == 6


@pytest.mark.timeout(360)  # a real process / Prefect slot waits on a busy machine
def test_j_above_the_kind_default_runs_as_many_with_a_server(tmp_path, llm_server):
    """lmstudio's default is 1 request in flight. ``-j 3`` on a block without its own
    parallelism runs 3 at once, as it does without a server (the global limit used to be
    created at the kind's default and silently held the run at 1)."""
    block = LLMProvider(
        kind="lmstudio", model=unique("model"), api_base=llm_server.base_url, timeout=60
    )
    llm_server.hold_until_in_flight = 3  # reached however slowly the workers start
    summary = run_batch(
        block, prompts(tmp_path / "in", 6), tmp_path / "out", parallelism=3, task_per_prompt=False
    )
    assert summary.ok == 6
    assert llm_server.max_in_flight == 3
    assert asyncio.run(limit_size(limit_key(block))) == 3


@pytest.mark.timeout(360)  # a real process / Prefect slot waits on a busy machine
def test_j_above_the_limit_at_the_server_says_so_in_one_line(tmp_path, llm_server):
    """``llm-conductor batch -j 5`` (a real process, talking to this session's Prefect API)
    where the limit was made in the UI at 2: the run keeps to 2 and says on stderr, in one
    line, that the block's limit caps -j."""
    from prefect.settings import get_current_settings

    model = unique("model")
    block = LLMProvider(kind="openai", model=model, api_base=llm_server.base_url)
    asyncio.run(edit_in_the_ui(limit_key(block), 2, create=True))
    llm_server.latency = 0.1
    src, out = prompts(tmp_path / "in", 6), tmp_path / "out"
    env = {
        **os.environ,
        "PREFECT_API_URL": get_current_settings().api.url,
        "OPENAI_API_KEY": "sk-x",
        "LITELLM_TIMEOUT": "30",
    }
    argv = [CLI, "batch", "-p", "openai", "-m", model, "--api-base", llm_server.base_url]
    argv += ["-j", "5", "--task-per-worker", "-i", str(src), "-o", str(out)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "-j 5" in line]
    assert len(notices) == 1, result.stderr
    assert "above the block's limit of 2" in notices[0] and "running 2" in notices[0]
    assert llm_server.max_in_flight <= 2
    assert len(list(out.glob("*.md"))) == 6


@pytest.mark.timeout(360)  # a real process / Prefect slot waits on a busy machine
def test_explores_and_a_batch_on_one_block_keep_to_its_limit_at_the_server(
    tmp_path, llm_server, monkeypatch
):
    """Two explores (3 producers each) and a batch (-j 3) at once, all on the block whose
    limit at the server is 3: never more than 3 requests in flight there. The server holds
    the first answers until 4 are in flight (30 s at most), so a run that ignored the limit
    would be seen (explore used to)."""
    from flows.batch import run_prompt_batch
    from flows.explore import run_exploration
    from tasks.explore import ExploreSettings

    model = unique("model")
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("LITELLM_TIMEOUT", "60")
    block = LLMProvider(
        kind="openai", model=model, api_base=llm_server.base_url, api_key="sk-x", timeout=60
    )
    counter = itertools.count()
    llm_server.reply = lambda body: "\n".join(f"{i}. thing {next(counter)}" for i in range(1, 4))
    llm_server.hold_until_in_flight = 4

    async def go() -> list:
        await edit_in_the_ui(limit_key(block), 3, create=True)
        explores = [
            run_exploration(
                ExploreSettings(
                    topic="Paris",
                    producers=3,
                    max_requests=2,
                    routing_config=f"openai:{model}",
                ),
                tmp_path / f"explore-{n}",
            )
            for n in range(2)
        ]
        batch = run_prompt_batch(
            prompts(tmp_path / "in", 6),
            tmp_path / "out",
            block,
            parallelism=3,
            task_per_prompt=False,
        )
        return await asyncio.gather(*explores, batch)

    first, second, batch = asyncio.run(go())
    assert first.requests == second.requests == 6 and first.failures == second.failures == 0
    assert batch.ok == 6
    assert llm_server.max_in_flight == 3


def test_blocks_and_tasks_never_import_flows(project_root):
    """The layers go blocks <- tasks <- flows: nothing below ``flows/`` imports from it, at
    module level or inside a function (tasks/limits.py used to, for the Prefect API URL)."""
    upward = []
    for package in ("blocks", "tasks"):
        for path in sorted((project_root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                upward += [
                    f"{path.relative_to(project_root)}: {name}"
                    for name in names
                    if name == "flows" or name.startswith("flows.")
                ]
    assert upward == []


@pytest.mark.timeout(360)  # a real process starting its own ephemeral Prefect API
def test_j_above_the_blocks_parallelism_is_capped_without_a_server_too(tmp_path, llm_server):
    """No Prefect server configured (a real process, ephemeral API): a block of parallelism 3
    asked for 5 runs 3 at once, as with a server, and says so in one line (it used to run 5).
    The server holds the first answers until 4 are in flight (30 s at most)."""
    src, out = prompts(tmp_path / "in", 6), tmp_path / "out"
    code = (
        "import sys; from blocks import LLMProvider; from flows.batch_run import run_batch_mode;"
        f"block = LLMProvider(kind='openai', model='m', api_base={llm_server.base_url!r},"
        " api_key='sk-x', parallelism=3, timeout=60);"
        f"sys.exit(run_batch_mode(block, None, 5, False, False, {str(src)!r}, {str(out)!r}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    llm_server.hold_until_in_flight = 4
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "5 is above" in line]
    assert len(notices) == 1, result.stderr
    assert "the block's limit of 3" in notices[0] and "running 3" in notices[0]
    assert llm_server.max_in_flight == 3
    assert len(list(out.glob("*.md"))) == 6
