"""The deployments on a real ``prefect server start``: blocks, deploy, process workers, runs.

Everything the user would do, on loopback, in a temporary folder: start the server (SQLite in
a temporary PREFECT_HOME, free port), ``python -m deployments.setup`` (block type, work pool,
provider blocks), ``prefect deploy --all`` from ``deployments/prefect.yaml``, two ``prefect
worker start --type process`` on the pool, then flow runs triggered through the API and checked
through the Prefect client: output files, states, artifacts, which worker ran what, and the
provider block's global concurrency limit across two simultaneous batch runs at the local
OpenAI-compatible server. One server for the whole module; every process started here is
stopped (process groups and their flow-run children) when the module ends, whatever happened.

Run alone: ``python -m pytest -m prefect_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.support.llm_server import LLMServer

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(360)]

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
POOL = "llm-conductor"
BLOCK = "test-llm"  # openai kind at the test server, parallelism BLOCK_LIMIT
BLOCK_LIMIT = 3
KEY = "sk-deployments-test-key"
WORKERS = ("worker-a", "worker-b")
RUN_TIMEOUT = 180.0  # seconds from trigger to final state (≈15 s on an idle machine)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``: flow-run processes start in sessions of their own,
    so killing the worker's process group alone would leave them running."""
    if not Path("/proc").is_dir():
        return []
    tree, found, todo = _children_map(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_processes(processes: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM to each process's group and every descendant, all at once; SIGKILL to what
    is left after ``grace`` seconds (a worker whose server is gone can take that long)."""
    targets = {
        process: [process.pid, *_descendants(process.pid)]
        for process in processes
        if process.poll() is None
    }

    def signal_all(sig: signal.Signals) -> None:
        for process, pids in targets.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            for pid in pids[1:]:
                with contextlib.suppress(OSError):  # gone, or its pid reused by another program
                    if b"python" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, sig)

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in targets:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    signal_all(signal.SIGKILL)  # children that outlived their parent included
    for process in targets:
        process.wait(timeout=10)


class HoldingServer(LLMServer):
    """The test LLM server, able to hold every answer until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.release.set()

    async def _complete(self, *args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not self.release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await super()._complete(*args, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The running server and workers, and how to reach them."""

    api_url: str
    ui_url: str
    env: dict[str, str]
    home: Path
    server: HoldingServer
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self.home / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, *args],
                    cwd=ROOT,
                    env=env or self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
            )

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> str:
        """Run a command to completion; its output, or a failure showing it."""
        done = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(args)} -> {done.returncode}:\n{output}"
        return output

    def log_tails(self) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ---\n{text[-3000:]}")
        return "\n".join(parts)

    def client(self) -> Any:
        from prefect.client.orchestration import PrefectClient

        return PrefectClient(self.api_url)


def quiet_env(home: Path, api_url: str, db: Path) -> dict[str, str]:
    """The subprocesses' environment: this isolated server, quiet (NOTES.md), fast polling."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "OPENROUTER_"))
    }
    env.update(
        PREFECT_HOME=str(home / "prefect-home"),
        PREFECT_API_URL=api_url,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{db}",
        PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_WORKER_QUERY_SECONDS="1",  # default 10: a run would wait up to 10 s
        PREFECT_CLI_COLORS="false",
        LLM_CONDUCTOR_LOG_FILE=str(home / "llm-conductor.log"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def wait_healthy(stack: Stack, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}\n{stack.log_tails()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{stack.api_url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"prefect server not healthy within {timeout:.0f}s\n{stack.log_tails()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Server, block type, pool, blocks, deployments and two process workers, once."""
    timings: dict[str, float] = {}
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = quiet_env(home, api_url, home / "prefect.db")
    server = HoldingServer().start()
    stack = Stack(api_url, f"http://127.0.0.1:{port}", env, home, server)
    try:
        started = time.monotonic()
        stack.start(
            "server", "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)
        )
        wait_healthy(stack, stack.processes[0])
        timings["server start"] = time.monotonic() - started

        started = time.monotonic()
        stack.run(
            "-m",
            "deployments.setup",
            "--block",
            BLOCK,
            "--kind",
            "openai",
            "--model",
            "test-model",
            "--api-base",
            server.base_url,
            "--api-key-env",
            "TEST_LLM_KEY",
            "--parallelism",
            str(BLOCK_LIMIT),
            "--timeout",
            "240",  # an answer may be held (see the simultaneous-runs test)
            "--retries",
            "1",
            env={**env, "TEST_LLM_KEY": KEY},  # only setup sees the key: workers use the block
        )
        timings["setup"] = time.monotonic() - started

        # The workers start (seconds of imports) while `prefect deploy` runs.
        for worker in WORKERS:
            stack.start(
                worker,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                "--name",
                worker,
                "--limit",
                "1",  # one flow run at a time: runs triggered together go to both workers
                "--install-policy",
                "never",
            )
        started = time.monotonic()
        stack.run(
            "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)
        )
        timings["deploy"] = time.monotonic() - started
        asyncio.run(wait_for_workers(stack, set(WORKERS)))
        timings["workers online"] = time.monotonic() - started
        print("\nstack timings:", {k: round(v, 1) for k, v in timings.items()})
        yield stack
    finally:
        stop_processes(stack.processes[1:])  # the workers first, while the server is up
        stop_processes(stack.processes[:1])
        server.stop()


async def wait_for_workers(stack: Stack, names: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with stack.client() as client:
        while time.monotonic() < deadline:
            online = {w.name for w in await client.read_workers_for_work_pool(POOL)}
            if names <= online:
                return
            await asyncio.sleep(0.5)
    pytest.fail(f"workers {names} not online within {timeout:.0f}s\n{stack.log_tails()}")


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def block_ref(name: str) -> dict[str, Any]:
    return {"$ref": {"block_document_slug": f"llm-provider/{name}"}}


async def trigger(client: Any, deployment: str, parameters: dict[str, Any]) -> UUID:
    found = await client.read_deployment_by_name(deployment)
    flow_run = await client.create_flow_run_from_deployment(found.id, parameters=parameters)
    return flow_run.id


async def wait_final(stack: Stack, client: Any, ids: list[UUID]) -> list[Any]:
    """The flow runs once all are in a final state (bounded by RUN_TIMEOUT)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        runs = [await client.read_flow_run(i) for i in ids]
        if all(run.state is not None and run.state.is_final() for run in runs):
            return runs
        if time.monotonic() > deadline:
            states = [(str(r.id), r.state and r.state.name) for r in runs]
            pytest.fail(f"runs not finished in {RUN_TIMEOUT:.0f}s: {states}\n{stack.log_tails()}")
        await asyncio.sleep(0.5)


def assert_completed(stack: Stack, runs: list[Any]) -> None:
    bad = [(r.name, r.state.name, r.state.message) for r in runs if not r.state.is_completed()]
    assert not bad, f"{bad}\n{stack.log_tails()}"


def write_prompts(folder: Path, count: int, label: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"p{i:02d}.md.prompt.md").write_text(f"{label} prompt {i}\n")


async def run_logs(client: Any, flow_run_id: UUID) -> list[str]:
    """The flow run's log messages (sent in batches: wait until the summary is in)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 60
    while True:
        found = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        messages = [log.message for log in found]
        if any(m.startswith("batch: ") for m in messages) or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.5)


async def artifacts_of(client: Any, flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {a.key: a for a in found if a.key}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_setup_registered_type_pool_blocks_and_deployments(stack: Stack) -> None:
    async def check() -> None:
        async with stack.client() as client:
            assert (await client.read_block_type_by_slug("llm-provider")).name == "LLM Provider"
            pool = await client.read_work_pool(POOL)
            assert pool.type == "process"
            docs = {
                d.name: d
                for d in await client.read_block_documents_by_type("llm-provider")
                if d.name
            }
            assert docs["offline"].data["kind"] == "random"
            assert docs[BLOCK].data["api_base"] == stack.server.base_url
            assert docs[BLOCK].data["api_key"] == KEY  # stored in the block (encrypted at rest)
            batch = await client.read_deployment_by_name("Run prompt batch/batch")
            assert batch.work_pool_name == POOL
            assert batch.parameters["provider"] == block_ref("offline")
            assert batch.parameters["input_dir"] == "prompts"
            assert [s.schedule.cron for s in batch.schedules] == ["0 2 * * *"]
            assert batch.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ]
            single = await client.read_deployment_by_name("Complete one prompt/single")
            assert single.parameters["provider"] == block_ref("offline")
            deployed = {d.name: d for d in await client.read_deployments()}
            assert set(deployed) == {"single", "batch", "explore"}  # `deploy --all`
            assert {d.work_pool_name for d in deployed.values()} == {POOL}

    asyncio.run(check())
    with urllib.request.urlopen(stack.ui_url + "/", timeout=10) as response:  # the UI
        assert response.status == 200 and b"<html" in response.read().lower()

    # Idempotent: again, and again leaving existing blocks alone.
    out = stack.run("-m", "deployments.setup", "--keep-existing")
    assert "pool llm-conductor: kept" in out and "llm-provider/offline: kept" in out


def test_batch_deployment_run_outputs_state_and_artifacts(stack: Stack, tmp_path: Path) -> None:
    server = stack.server
    server.reset()
    src, out = tmp_path / "prompts", tmp_path / "outputs"
    write_prompts(src / "sub", 2, "nested")
    write_prompts(src, 3, "top")

    async def go() -> tuple[Any, dict[str, Any], list[str]]:
        async with stack.client() as client:
            run_id = await trigger(
                client,
                "Run prompt batch/batch",
                {"input_dir": str(src), "output_dir": str(out), "provider": block_ref(BLOCK)},
            )
            [run] = await wait_final(stack, client, [run_id])
            return run, await artifacts_of(client, run_id), await run_logs(client, run_id)

    started = time.monotonic()
    run, artifacts, logs = asyncio.run(go())
    print(f"\nbatch deployment run: {time.monotonic() - started:.1f}s trigger to final state")
    assert_completed(stack, [run])
    assert run.state.message == "5 ok, 0 failed, 0 up to date"
    # The project's own lines are in the run's logs (the worker imported Prefect first).
    assert any(line.startswith("ok sub/p01.md.prompt.md") for line in logs), logs
    assert any(line.startswith("batch: 5 prompts: 5 ok") for line in logs), logs
    assert run.parameters["provider"] == block_ref(BLOCK), "the key is never copied into it"

    written = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".llm-conductor" not in p.parts
    )
    assert written == ["p00.md", "p01.md", "p02.md", "sub/p00.md", "sub/p01.md"]
    text = (out / "sub" / "p01.md").read_text()
    assert text.startswith("<!-- Prompt Hash: ") and "nested prompt 1" in text
    assert server.request_count == 5
    assert {r.headers.get("authorization") for r in server.requests} == {f"Bearer {KEY}"}

    assert {"batch-summary", "batch-prompts", "batch-progress"} <= set(artifacts)
    assert "| Generated | 5 |" in artifacts["batch-summary"].data
    table = artifacts["batch-prompts"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert sorted((r["file"], r["status"]) for r in rows) == [
        ("p00.md.prompt.md", "ok"),
        ("p01.md.prompt.md", "ok"),
        ("p02.md.prompt.md", "ok"),
        ("sub/p00.md.prompt.md", "ok"),
        ("sub/p01.md.prompt.md", "ok"),
    ]
    assert float(artifacts["batch-progress"].data) == 100.0


def test_two_simultaneous_batches_on_two_workers_share_the_blocks_limit(
    stack: Stack, tmp_path: Path
) -> None:
    """Two batch runs on one provider block, each asking for more parallelism than the
    block allows: they run at once on the two workers (one run each), and the LLM server
    never sees more than the block's limit in flight.

    The server holds every answer until both runs are inside their flow (their progress
    artifacts exist) and the block's limit is in flight, and 2 s more: both runs then want
    more slots while none is free. Without the global limit up to 16 would be at the server
    (each run's own gate allows 8)."""
    server = stack.server
    server.reset()
    server.latency = 0.3
    server.release.clear()
    count = 12
    labels = ("left", "right")
    for label in labels:
        write_prompts(tmp_path / label, count, label)
    held: list[Any] = []

    async def go() -> tuple[list[Any], datetime]:
        async with stack.client() as client:
            ids = [
                await trigger(
                    client,
                    "Run prompt batch/batch",
                    {
                        "input_dir": str(tmp_path / label),
                        "output_dir": str(tmp_path / f"{label}-out"),
                        "provider": block_ref(BLOCK),
                        "parallelism": 8,  # above the block's 3: the global limit caps it
                    },
                )
                for label in labels
            ]
            deadline = time.monotonic() + RUN_TIMEOUT
            while True:
                found = [await artifacts_of(client, i) for i in ids]
                inside = all("batch-progress" in a for a in found)
                if inside and server.in_flight >= BLOCK_LIMIT:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"inside their flows: {inside}, in flight: {server.in_flight}\n"
                        f"{stack.log_tails()}"
                    )
                await asyncio.sleep(0.25)
            await asyncio.sleep(2)  # the other run is asking for slots meanwhile
            held.extend(server.requests)
            released = datetime.now(UTC)
            server.release.set()
            return await wait_final(stack, client, ids), released

    started = time.monotonic()
    try:
        runs, released = asyncio.run(go())
    finally:
        server.release.set()
    print(f"\n2 simultaneous batch runs: {time.monotonic() - started:.1f}s")
    assert_completed(stack, runs)
    for label in labels:
        assert len(list((tmp_path / f"{label}-out").glob("*.md"))) == count
    assert server.request_count == 2 * count
    assert server.max_in_flight == BLOCK_LIMIT
    # While held, exactly the block's limit was at the server, although both runs had started,
    # on both workers, each allowed 8 by its own gate. How the 3 slots split between the runs
    # depends on which reached the limit first (3+0 or 2+1); either way the sum is capped.
    sources = {label for r in held for label in labels if f"{label} prompt" in json.dumps(r.json)}
    assert len(held) == BLOCK_LIMIT and sources, (len(held), sources)
    assert all(run.start_time < released for run in runs)
    assert {run.labels.get("prefect.worker.name") for run in runs} == set(WORKERS)


def test_single_and_explore_deployments_with_their_defaults(stack: Stack, tmp_path: Path) -> None:
    """The other two deployments, triggered together: `single` as deployed (its `offline`
    block reference from prefect.yaml), `explore` with a small budget."""
    output = tmp_path / "explore"

    async def go() -> list[Any]:
        async with stack.client() as client:
            ids = [
                await trigger(client, "Complete one prompt/single", {}),
                await trigger(
                    client,
                    "Explore a topic/explore",
                    {"topic": "rivers", "producers": 2, "iterations": 3, "output": str(output)},
                ),
            ]
            return await wait_final(stack, client, ids)

    started = time.monotonic()
    runs = asyncio.run(go())
    print(f"\nsingle + explore runs: {time.monotonic() - started:.1f}s")
    assert_completed(stack, runs)
    assert runs[0].parameters["provider"] == block_ref("offline")
    # The answer of `single` is retrievable: the run's persisted result and its artifact.
    from blocks.result import Completion

    async def answer() -> tuple[Any, dict[str, Any]]:
        async with stack.client() as client:
            run = await client.read_flow_run(runs[0].id)
            return await run.state.aresult(), await artifacts_of(client, run.id)

    completion, artifacts = asyncio.run(answer())
    assert isinstance(completion, Completion) and completion.provider == "random"
    assert completion.text.strip() and completion.completion_tokens > 0
    markdown = artifacts["single-answer"].data
    assert completion.text.strip().splitlines()[0] in markdown
    assert "| random | random |" in markdown
    assert (output / "output.txt").read_text().strip()
    assert json.loads((output / "output.json").read_text())
