"""The batch's unit of work: one prompt -> one validated output text, cached by prompt key."""

from __future__ import annotations

import hashlib

from prefect import task
from prefect.context import TaskRunContext
from pydantic import BaseModel

from blocks.errors import InvalidOutput
from blocks.llm_provider import LLMProvider
from blocks.result import Completion
from tasks.outputs import render_output

__all__ = ["GeneratedOutput", "generate_output"]


class GeneratedOutput(BaseModel):
    """A completion and the file text rendered from it (what the cache persists)."""

    completion: Completion
    text: str
    is_json: bool


def _by_prompt_key(context: TaskRunContext, parameters: dict[str, object]) -> str:
    # Scoped to the output folder: the cache exists to resume *this* job, and an identical
    # prompt elsewhere should not silently reuse an answer (use --force semantics there).
    scope = hashlib.sha256(f"{parameters['scope']}\0{parameters['key']}".encode()).hexdigest()
    return f"llm-conductor-{scope}"


@task(
    name="generate-output",
    task_run_name="{name}",
    cache_key_fn=_by_prompt_key,
    persist_result=True,
    retries=0,
)
async def generate_output(
    provider: LLMProvider, prompt: str, key: str, output_format: str, name: str, scope: str = ""
) -> GeneratedOutput:
    """Ask the model and render the output file's text; fails (and caches nothing) when the
    answer does not fit ``output_format``.

    The result is persisted under the prompt key, so a run killed after the model answered
    but before the file was written gets the answer back from the cache instead of paying
    again. ``scope`` (the output folder) is part of the cache key; ``name`` only labels the
    task run. Retries happen inside the provider block (one loop, honouring Retry-After).

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider
        from tasks.generate import generate_output

        @flow
        async def one() -> str:
            out = await generate_output(
                LLMProvider(kind="random"), "Give me JSON", "k1", "json", "demo"
            )
            return out.text
        ```
    """
    completion = await provider.acomplete(prompt)
    try:
        text, is_json = render_output(completion.text, output_format, key, completion.metadata())
    except InvalidOutput as error:
        raise InvalidOutput(str(error), answer=completion.text) from None
    return GeneratedOutput(completion=completion, text=text, is_json=is_json)
