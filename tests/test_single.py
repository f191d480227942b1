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


@pytest.mark.asyncio
async def test_without_a_prefect_api_no_server_is_needed(monkeypatch):
    import flows.single as single

    monkeypatch.setattr(single, "configured_api_url", lambda: None)

    class NotTheFlow:
        name = single.complete_prompt.name

        def __call__(self, *args, **kwargs):
            raise AssertionError("the flow (and so a Prefect server) must not be used")

    monkeypatch.setattr(single, "complete_prompt", NotTheFlow())
    completion = await run_single("a list of birds", LLMProvider(kind="random"))
    assert completion.text.startswith("1. ")
