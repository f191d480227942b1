"""One completion without Prefect: the body of the ``call-model`` task (tasks/llm.py).

Kept apart from the task so that ``run`` without a Prefect API never imports Prefect.
"""

from __future__ import annotations

import logging
import sys

from blocks.client import ProviderClient
from blocks.result import Completion

__all__ = ["complete", "stream_to_stdout"]

logger = logging.getLogger("llm_conductor.tasks")


def stream_to_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def complete(provider: ProviderClient, prompt: str, stream: bool = False) -> Completion:
    """Complete ``prompt`` with ``provider``; with ``stream`` the answer goes to stdout as it
    comes. The body of ``call_model``, usable without Prefect."""
    completion = await provider.acomplete(prompt, on_text=stream_to_stdout if stream else None)
    logger.debug(
        "%s answered in %.2fs: %d+%d tokens%s, %s segment(s), %s attempt(s)",
        provider.label,
        completion.elapsed,
        completion.prompt_tokens,
        completion.completion_tokens,
        " (estimated)" if completion.usage.estimated else "",
        completion.segments,
        completion.attempts,
    )
    return completion
