"""The single-prompt flow: a flow run when a Prefect API is configured, a plain call otherwise."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks import LLMProvider
from flows.single import run_single


def test_with_a_prefect_api_every_run_is_a_flow_run(prefect_harness, llm_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    llm_server.reply = "from the flow"
    provider = LLMProvider(kind="openai", model="m", api_base=llm_server.base_url, api_key="k")

    async def go():
        completion = await run_single("hello", provider)
        async with get_client() as client:
            runs = await client.read_flow_runs(sort="START_TIME_DESC", limit=5)
            flow = await client.read_flow(runs[0].flow_id)
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id]))
            )
        return completion, flow.name, found[0].state.type.value

    completion, flow_name, state = asyncio.run(go())
    assert completion.text == "from the flow"
    assert flow_name == "Complete one prompt" and state == "COMPLETED"


def test_the_flow_runs_answer_is_persisted_and_an_artifact(prefect_harness, llm_server):
    """What a deployment's caller reads back through the API: the result, not MissingResult,
    and the answer as markdown, verbatim even with fences of its own."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.single import complete_prompt

    answer = "Here:\n```python\nprint('hi')\n```\nand ```` four."
    llm_server.reply = answer
    provider = LLMProvider(kind="openai", model="m", api_base=llm_server.base_url, api_key="k")

    async def go():
        state = await complete_prompt("hello", provider, return_state=True)
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            return await run.state.aresult(), {a.key: a.data for a in artifacts}

    completion, artifacts = asyncio.run(go())
    assert completion.text == answer
    assert f"`````text\n{answer}\n`````" in artifacts["single-answer"]


@pytest.mark.asyncio
async def test_without_a_prefect_api_no_server_is_needed(monkeypatch):
    import flows.single as single
    import flows.single_run as single_run

    monkeypatch.setattr(single_run, "configured_api_url", lambda: None)

    class NotTheFlow:
        name = single.complete_prompt.name

        def __call__(self, *args, **kwargs):
            raise AssertionError("the flow (and so a Prefect server) must not be used")

    monkeypatch.setattr(single, "complete_prompt", NotTheFlow())
    completion = await run_single("a list of birds", LLMProvider(kind="random"))
    assert completion.text.startswith("1. ")


# -- `llm-conductor run` as a subprocess against the local server --------------------------

CLI = str(Path(sys.executable).parent / "llm-conductor")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LITELLM_"))}
    return subprocess.run(
        [CLI, "run", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, "LITELLM_TIMEOUT": "10", **env},
        stdin=subprocess.DEVNULL,
    )


def continued_reply(body) -> str:
    n = sum(m["role"] == "assistant" for m in body["messages"])
    return " ".join(f"part{n}-word{i}" for i in range(6))


@pytest.fixture
def local_openai(llm_server) -> dict[str, str]:
    return {"OPENAI_BASE_URL": llm_server.base_url, "OPENAI_API_KEY": "sk-single-test"}


def test_run_fails_on_a_still_truncated_answer_unless_accepted(llm_server, local_openai):
    llm_server.reply = continued_reply
    llm_server.length_rounds = 100
    failed = run_cli("-p", "openai", "-m", "m", "--prompt", "long", env=local_openai)
    assert failed.returncode == 1
    [line] = failed.stderr.splitlines()
    assert line.startswith("Error: openai:m: answer truncated after 3 continuations")
    assert "part3-" in failed.stdout, "what streamed stays printed"
    for how in (["--accept-truncated"], []):
        env = {**local_openai, **({} if how else {"LLM_CONDUCTOR_ACCEPT_TRUNCATED": "1"})}
        kept = run_cli("-p", "openai", "-m", "m", "--prompt", "long", *how, env=env)
        assert kept.returncode == 0, kept.stderr
        assert kept.stdout.startswith("part0-word0") and "part3-" in kept.stdout


def test_run_fails_on_a_stream_that_stops_without_finishing(llm_server, local_openai):
    llm_server.reply = "Hello world, this answer will be cut off before its end"
    llm_server.enqueue("cut_stream")
    result = run_cli("-p", "openai", "-m", "m", "--prompt", "x", env=local_openai)
    assert result.returncode == 1
    assert result.stdout.startswith("Hello") and "its end" not in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: openai: stream interrupted after ")
    assert "no finish reason" in line
    assert len(llm_server.requests) == 1


def test_run_needs_no_key_for_a_local_server(llm_server):
    llm_server.reply = "local answer"
    result = run_cli("-p", "openai", "--prompt", "x", env={"OPENAI_BASE_URL": llm_server.base_url})
    assert (result.returncode, result.stdout) == (0, "local answer\n"), result.stderr


def test_run_takes_a_litellm_model_string_as_provider(llm_server):
    llm_server.reply = "from gemma"
    env = {"OPENAI_BASE_URL": llm_server.base_url}
    result = run_cli("-p", "openai/gemma-3-270m", "--prompt", "x", env=env)
    assert (result.returncode, result.stdout) == (0, "from gemma\n"), result.stderr
    assert llm_server.requests[0].json["model"] == "gemma-3-270m"


def test_the_first_attempt_is_not_spent_importing(llm_server, local_openai):
    # A 1 s deadline against an instant server: importing litellm (2+ s) must happen before
    # it starts, or the first attempt fails without sending anything.
    llm_server.reply = "in time"
    env = {**local_openai, "LITELLM_TIMEOUT": "1", "LITELLM_NUM_RETRIES": "0"}
    result = run_cli("-p", "openai", "-m", "m", "--prompt", "x", env=env)
    assert (result.returncode, result.stdout) == (0, "in time\n"), result.stderr
    assert len(llm_server.requests) == 1


def test_run_without_a_prefect_api_never_imports_prefect(llm_server, tmp_path):
    """Importing Prefect is ≈1.1 s of a command whose call takes milliseconds here."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_"))}
    env.update(HOME=str(home), PREFECT_HOME=str(home / ".prefect"))
    env.update(OPENAI_BASE_URL=llm_server.base_url)
    llm_server.reply = "plain"
    code = (
        "import sys\n"
        "from flows.cli import main\n"
        "try:\n"
        "    main(['run', '-p', 'openai', '-m', 'm', '--prompt', 'x'])\n"
        "except SystemExit as done:\n"
        "    print(done.code, 'prefect' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["plain", "0", "False"], result.stderr
