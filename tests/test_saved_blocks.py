"""``--block NAME``: the CLI uses a provider block saved in a real Prefect server.

The session's temporary Prefect server (``prefect_harness``, a real ``prefect server``
subprocess) holds the blocks; each command is a real ``llm-conductor`` process pointed at it
with PREFECT_API_URL, calling the local OpenAI-compatible test server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blocks import LLMProvider

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(360)]

KEY = "sk-saved-block-key"


def api_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    assert url, "the harness sets an API URL"
    return url


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PREFECT_API_URL": api_url(), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.fixture
def saved_block(llm_server) -> str:
    block = LLMProvider(
        kind="openai",
        model="saved-model",
        api_base=llm_server.base_url,
        api_key=KEY,
        timeout=30,
        retries=0,
    )
    block.save("cli-saved", overwrite=True)
    return "cli-saved"


def test_run_uses_the_saved_block_key_model_and_endpoint(llm_server, saved_block) -> None:
    llm_server.reply = "answer from the saved block"
    # The environment names another provider and model: the saved block wins over it.
    done = cli(
        "run",
        "--block",
        saved_block,
        "--prompt",
        "hello",
        "--no-stream",
        env={"MODEL_NAME": "env-model", "OPENAI_API_KEY": "sk-env"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "answer from the saved block\n"
    [request] = llm_server.requests
    assert request.json["model"] == "saved-model"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_batch_with_a_saved_block_and_a_flag_on_top(llm_server, saved_block, tmp_path) -> None:
    src, out = tmp_path / "prompts", tmp_path / "outputs"
    src.mkdir()
    (src / "a.md.prompt.md").write_text("first prompt")
    (src / "b.md.prompt.md").write_text("second prompt")
    done = cli(
        "batch", "-i", str(src), "-o", str(out), "--block", saved_block, "--model", "flag-model"
    )
    assert done.returncode == 0, done.stderr
    assert "2 ok, 0 failed" in done.stderr
    assert "first prompt" in (out / "a.md").read_text()
    assert {r.json["model"] for r in llm_server.requests} == {"flag-model"}
    assert {r.headers["authorization"] for r in llm_server.requests} == {f"Bearer {KEY}"}
    assert KEY not in done.stderr + done.stdout


def test_a_missing_block_is_one_line_naming_it(llm_server) -> None:
    done = cli("run", "--block", "no-such-block", "--prompt", "hello")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: no LLM Provider block named 'no-such-block' at ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert llm_server.request_count == 0


def test_a_flag_the_block_cannot_take_is_a_usage_error(llm_server, saved_block) -> None:
    done = cli("run", "--block", saved_block, "--prompt", "hi", "--temperature", "9")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: invalid temperature: "), done.stderr
    assert llm_server.request_count == 0


def test_a_flow_run_with_a_missing_block_fails_naming_it() -> None:
    """What a deployment run gets when its ``provider`` references no saved block."""
    import asyncio

    from prefect.exceptions import ParameterTypeError

    from flows.single import complete_prompt

    missing = {"$ref": {"block_document_slug": "llm-provider/not-saved"}}
    with pytest.raises(ParameterTypeError) as raised:
        asyncio.run(complete_prompt("hello", missing))
    assert str(raised.value).startswith("no saved llm-provider block named 'not-saved' ("), str(
        raised.value
    )


def test_every_block_field_has_a_description() -> None:
    properties = LLMProvider.model_json_schema()["properties"]
    assert set(properties) >= {"kind", "model", "api_key", "temperature", "reasoning_effort"}
    assert [name for name, field in properties.items() if not field.get("description")] == []


@pytest.mark.prefect_server
def test_a_fresh_server_knows_the_block_type_from_the_entry_point(tmp_path) -> None:
    """Nothing registers it: a new ``prefect server start`` finds the ``LLM Provider`` type
    through the ``prefect.collections`` entry point, with every field described."""
    import asyncio
    import time

    from prefect.client.orchestration import PrefectClient
    from prefect.exceptions import ObjectNotFound

    from tests.test_deployments import free_port, quiet_env, stop_processes
    from tests.test_readme import _wait_for_api

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = quiet_env(tmp_path, api, tmp_path / "prefect.db")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        cwd=tmp_path,  # not the project root: its llm_conductor.egg-info has the entry point too
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    async def block_type() -> tuple[Any, Any]:
        async with PrefectClient(api) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    found = await client.read_block_type_by_slug("llm-provider")
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, "the block type never appeared"
                    await asyncio.sleep(0.5)
            schema = await client.get_most_recent_block_schema_for_block_type(found.id)
            return found, schema

    try:
        _wait_for_api(f"{api}/health", server)
        found, schema = asyncio.run(block_type())
    finally:
        stop_processes([server])
    assert found.name == "LLM Provider"
    assert found.description
    properties = schema.fields["properties"]
    assert [name for name, field in properties.items() if not field.get("description")] == []
