"""The single-prompt flow: a flow run when a Prefect API is configured, a plain call otherwise."""

from __future__ import annotations

import asyncio

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

    monkeypatch.setattr(single, "prefect_api_url", lambda: None)

    class NotTheFlow:
        name = single.complete_prompt.name

        def __call__(self, *args, **kwargs):
            raise AssertionError("the flow (and so a Prefect server) must not be used")

    monkeypatch.setattr(single, "complete_prompt", NotTheFlow())
    completion = await run_single("a list of birds", LLMProvider(kind="random"))
    assert completion.text.startswith("1. ")
