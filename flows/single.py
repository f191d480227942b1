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
from flows.logs import log_to_prefect
from flows.parameters import names_missing_blocks
from flows.single_run import FLOW_NAME, run_single
from tasks.llm import call_model
from tasks.reporting import answer_markdown
from tasks.stopping import stop_propagates

__all__ = ["complete_prompt", "run_single"]


# persist_result: the completion is the run's result, read back through the API by whoever
# triggered a deployment run (without it: MissingResult).
@names_missing_blocks
@traced_flow
@flow(
    name=FLOW_NAME,
    description="Send one prompt to one provider; artifact single-answer holds the answer.",
    persist_result=True,
)
async def complete_prompt(prompt: str, provider: LLMProvider, stream: bool = False) -> Completion:
    """Complete one prompt through the ``call-model`` task; the answer is also the flow run's
    markdown artifact ``single-answer``."""
    from prefect.artifacts import acreate_markdown_artifact

    log_to_prefect()
    completion = await stop_propagates(call_model(provider, prompt, stream=stream))
    await acreate_markdown_artifact(
        answer_markdown(completion),
        key="single-answer",
        description=f"The answer of {completion.provider}:{completion.model}",
    )
    return completion


if __name__ == "__main__":
    import sys

    from flows.cli import main

    main(["run", *sys.argv[1:]])
