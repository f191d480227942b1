"""No API key reaches anything llm-conductor or Prefect writes, even when a server echoes it.

A canary key goes to the local server, which echoes it in every error body (as some proxies
and servers do). ``llm-conductor`` runs as the user runs it, with DEBUG on stderr: ``run`` and
``batch`` against a real ``prefect server start`` (logs to its API on), and ``batch`` on the
ephemeral API (no server configured: Prefect's own SQLite database in PREFECT_HOME). Then
every byte written is searched (stderr, stdout, log file, outputs, result storage, both Prefect
homes with their databases), and the server's logs, flow runs (parameters, states), task runs
and artifacts are read back through the Prefect API.

Run alone: ``python -m pytest -m prefect_server tests/test_secrets.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.llm_server import LLMServer
from tests.test_deployments import Stack, free_port, quiet_env, stop_processes, wait_healthy

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]

CANARY = "sk-canary-0d5f3a9e7c1b4e2a"
CANARY_BYTES = CANARY.encode()
CLI = str(Path(sys.executable).parent / "llm-conductor")


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real Prefect server (SQLite in its home) and the echoing LLM server."""
    home = tmp_path_factory.mktemp("secrets-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = quiet_env(home, api_url, home / "prefect.db")
    server = LLMServer().start()
    stack = Stack(api_url, f"http://127.0.0.1:{port}", env, home, server)  # type: ignore[arg-type]
    try:
        stack.start(
            "server", "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)
        )
        wait_healthy(stack, stack.processes[0])
        yield stack
    finally:
        stop_processes(stack.processes)
        server.stop()


def echo_faults(server: LLMServer) -> None:
    """Every request fails, and every error body holds the key the request carried."""
    server.reset()
    for _ in range(20):
        server.enqueue("429", retry_after=0, message="Rate limit for key {api_key}, slow down")
        server.enqueue("500", message="upstream failed while using api key {api_key}")


def llm_conductor(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CLI, "-v", *args],  # -v: DEBUG on stderr, the most that is ever shown
        capture_output=True,
        timeout=400,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


PYTHON_API_BATCH = """
import sys
from pathlib import Path
from blocks import LLMProvider
from flows.batch import run_batch
provider = LLMProvider(
    kind="openai", model="m", api_base=sys.argv[1], api_key=sys.argv[2], retries=1, timeout=30
)
summary = run_batch(provider, Path("prompts"), Path("out-api"))
print(summary.line(), file=sys.stderr)
sys.exit(summary.exit_code)
"""


def python_api_batch(
    base_url: str, *, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", PYTHON_API_BATCH, base_url, CANARY],
        capture_output=True,
        timeout=400,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 1500) : at + 500]


def files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


async def everything_the_api_holds(api_url: str) -> dict[str, list[str]]:
    """The text of every log, flow run (parameters, state) and task run, and artifact."""
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url) as client:
        logs = await client.read_logs(limit=200)
        flow_runs = await client.read_flow_runs(limit=200)
        task_runs = await client.read_task_runs(limit=200)
        artifacts = await client.read_artifacts(limit=200)
        results = []
        for run in task_runs:  # what a failed task run stored as its result
            if run.state is not None and run.state.is_failed():
                results.append(repr(await run.state.aresult(raise_on_failure=False)))
    return {
        "logs": [log.message for log in logs],
        "flow runs": [r.model_dump_json() for r in flow_runs],
        "task runs": [r.model_dump_json() for r in task_runs],
        "task results": results,
        "artifacts": [a.model_dump_json() for a in artifacts],
    }


def test_an_echoed_key_never_reaches_output_logs_or_prefect(prefect_stack, tmp_path):
    server = prefect_stack.server
    work = tmp_path / "work"
    for name in ("a", "b"):
        path = work / "prompts" / f"{name}.prompt.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"prompt {name}\n")
    user_env = {
        **prefect_stack.env,
        "PREFECT_LOGGING_TO_API_ENABLED": "true",  # the logs API must get everything
        "PREFECT_LOGGING_LEVEL": "DEBUG",
        "OPENAI_API_KEY": CANARY,
        "OPENAI_BASE_URL": server.base_url,
        "LITELLM_NUM_RETRIES": "1",
        "LITELLM_TIMEOUT": "30",
        "LLM_CONDUCTOR_LOG_FILE": str(tmp_path / "logs" / "llm-conductor.log"),
    }
    batch_args = ("batch", "-i", "prompts", "-o", "out", "-p", "openai", "-m", "m")

    # No server configured: the ephemeral API and its database in a PREFECT_HOME of its own.
    ephemeral = {
        k: v
        for k, v in user_env.items()
        if k not in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
    } | {
        "PREFECT_HOME": str(tmp_path / "ephemeral-home"),
        # --ephemeral: the API dies with the command (a managed server would stay running).
        "LLM_CONDUCTOR_EPHEMERAL": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "ephemeral-storage"),
    }
    (tmp_path / "ephemeral-home").mkdir()
    # The Python API with the key in the block itself: the block is a flow-run parameter.
    in_block = {k: v for k, v in user_env.items() if k != "OPENAI_API_KEY"}
    commands = [
        ("batch", batch_args, user_env),
        ("run", ("run", "-p", "openai", "-m", "m", "--prompt", "x"), user_env),
        ("batch on the ephemeral API", batch_args, ephemeral),
        ("run_batch with the key in the block", (), in_block),
    ]
    for label, args, env in commands:
        echo_faults(server)
        if label == "run":
            server.reset()
            server.enqueue("401", message="Incorrect API key provided: {api_key}.")
        if args:
            result = llm_conductor(*args, env=env, cwd=work)
        else:
            result = python_api_batch(server.base_url, env=env, cwd=work)
        stderr = result.stderr.decode(errors="replace")
        # The test can fail: the key went out, and came back in error bodies.
        assert server.requests, f"{label}: no request\n{stderr[-3000:]}"
        assert all(r.headers["authorization"] == f"Bearer {CANARY}" for r in server.requests)
        assert CANARY not in stderr, f"{label}: {_around(stderr, CANARY)}"
        assert CANARY_BYTES not in result.stdout, label
        assert result.returncode == 1, f"{label}: {stderr[-3000:]}"
    assert (tmp_path / "logs" / "llm-conductor.log").stat().st_size > 0
    assert any((tmp_path / "ephemeral-home").rglob("*.db")), "the ephemeral API kept its database"

    # Every file: outputs, manifest, rejected answers, log file, result storage, both
    # Prefect homes and the server's SQLite database.
    assert files_holding(tmp_path, CANARY_BYTES) == []
    assert files_holding(prefect_stack.home, CANARY_BYTES) == []

    held = asyncio.run(everything_the_api_holds(prefect_stack.api_url))
    assert held["logs"] and held["task runs"] and held["flow runs"], "the API recorded the runs"
    leaks = {what: [t for t in texts if CANARY in t] for what, texts in held.items()}
    assert leaks == {what: [] for what in held}
