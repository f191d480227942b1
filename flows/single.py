"""The single-prompt flow: one prompt in, one completion out (streamed when asked).

Run it with ``llm-conductor run`` or ``python -m flows.single``.
"""

from __future__ import annotations

from prefect import flow

from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from blocks.tracing import flow_span, traced_flow
from flows.logs import log_to_prefect
from flows.runtime import configured_api_url
from tasks.llm import call_model, complete
from tasks.stopping import stop_propagates

__all__ = ["complete_prompt", "run_single"]


@traced_flow
@flow(name="Complete one prompt", description="Send one prompt to one provider.")
async def complete_prompt(prompt: str, provider: LLMProvider, stream: bool = False) -> Completion:
    """Complete one prompt through the ``call-model`` task."""
    log_to_prefect()
    return await stop_propagates(call_model(provider, prompt, stream=stream))


async def run_single(prompt: str, provider: LLMProvider, *, stream: bool = False) -> Completion:
    """Complete ``prompt`` as a flow run when a Prefect API is configured, directly otherwise.

    Without a configured API, the task's function runs without Prefect (no server to start
    or connect to for a call that may take less than that).
    """
    if configured_api_url():
        return await complete_prompt(prompt, provider, stream=stream)
    with flow_span(complete_prompt.name):  # same trace shape as the flow run, without its id
        return await complete(provider, prompt, stream=stream)


if __name__ == "__main__":
    import sys

    from flows.cli import main

    main(["run", *sys.argv[1:]])
