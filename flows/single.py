"""The single-prompt flow: one prompt in, one completion out (streamed when asked).

Run it with ``llm-conductor run`` or ``python -m flows.single``; ``run_single`` (the entry
point, re-exported from flows/single_run.py) only imports this module when a Prefect API is
configured.
"""

from __future__ import annotations

from prefect import flow

from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from blocks.tracing import traced_flow
from flows.single_run import FLOW_NAME, run_single
from tasks.llm import call_model
from tasks.stopping import stop_propagates

__all__ = ["complete_prompt", "run_single"]


@traced_flow
@flow(name=FLOW_NAME, description="Send one prompt to one provider.")
async def complete_prompt(prompt: str, provider: LLMProvider, stream: bool = False) -> Completion:
    """Complete one prompt through the ``call-model`` task."""
    return await stop_propagates(call_model(provider, prompt, stream=stream))


if __name__ == "__main__":
    import sys

    from flows.cli import main

    main(["run", *sys.argv[1:]])
