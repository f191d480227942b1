"""The entry point of ``llm-conductor run``: a flow run when a Prefect API is configured, a
plain call otherwise, without importing Prefect (≈1.1 s of a command whose call takes
milliseconds against a local server; bench/run_overhead.py)."""

from __future__ import annotations

from blocks.config import ProviderConfig
from blocks.result import Completion
from blocks.tracing import flow_span
from flows.runtime import configured_api_url

__all__ = ["FLOW_NAME", "run_single"]

#: The single-prompt flow's name (flows/single.py), also the name of its span without Prefect.
FLOW_NAME = "Complete one prompt"


async def run_single(prompt: str, provider: ProviderConfig, *, stream: bool = False) -> Completion:
    """Complete ``prompt`` as a flow run when a Prefect API is configured, directly otherwise.

    Without a configured API, starting or connecting to a server (seconds) would cost more
    than a call that takes a fraction of that; the task's function runs without Prefect, and
    nothing is lost, since no UI was asked for. ``provider`` may be a plain configuration: it
    becomes the block (or, without Prefect, the bare client) here.
    """
    if configured_api_url():
        from blocks.llm_provider import LLMProvider
        from flows.single import complete_prompt

        return await complete_prompt(prompt, LLMProvider.from_config(provider), stream=stream)
    from blocks.client import ProviderClient
    from tasks.complete import complete

    with flow_span(FLOW_NAME):  # same trace shape as the flow run, without its id
        return await complete(ProviderClient.from_config(provider), prompt, stream=stream)
