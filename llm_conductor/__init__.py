"""The original llm-conductor's Python API, on top of the Prefect blocks and flows.

Example:
    ```python
    from llm_conductor import get_provider

    provider = get_provider("random")
    print(provider.run("Give me a list of rivers"))
    ```
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blocks.errors import ConductorError, UsageError
from blocks.llm_provider import LLMProvider, provider_from_env

__all__ = ["Provider", "get_provider", "run_batch_mode", "run_single_mode"]


class Provider:
    """A provider as the original API had it: ``run`` and ``async_run``."""

    def __init__(self, block: LLMProvider) -> None:
        self.block = block

    def run(self, prompt: str) -> str:
        """Complete ``prompt`` and return the answer text."""
        return self.block.complete(prompt).text

    async def async_run(
        self, prompt: str, stream_to_stdout: bool = False
    ) -> tuple[str, dict[str, Any], str | None]:
        """Complete ``prompt``; returns ``(content, usage, generation_id)``."""
        from tasks.llm import stream_to_stdout as write

        completion = await self.block.acomplete(prompt, on_text=write if stream_to_stdout else None)
        usage = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.usage.total_tokens,
            "cost": completion.cost,
        }
        return completion.text, usage, completion.response_id


def get_provider(
    provider_name: str | None = None,
    model_name: str | None = None,
    reasoning: str | None = None,
    **options: Any,
) -> Provider:
    """A provider by kind (or litellm model string), configured from the environment.

    The seed's signature: ``reasoning`` is the reasoning effort (minimal, low, medium, high);
    ``options`` are any other ``LLMProvider`` fields. An unknown provider raises
    ``UnknownProvider``, which is also a ``ValueError`` as in the seed.
    """
    return Provider(
        provider_from_env(provider_name, model=model_name, reasoning_effort=reasoning, **options)
    )


def _block(provider: Provider | LLMProvider) -> LLMProvider:
    return provider.block if isinstance(provider, Provider) else provider


def run_single_mode(
    provider: Provider | LLMProvider, verbose: bool = False, *, prompt: str | None = None
) -> int:
    """Stream one prompt's answer (``prompt``, else stdin) to stdout; returns the exit code.

    The seed's signature, ``run_single_mode(provider, verbose)``; ``verbose`` puts DEBUG
    logs on stderr too. A newline follows an answer that does not end with one.
    """
    from flows.logs import configure_logging
    from flows.single import run_single

    configure_logging(verbose)
    text = sys.stdin.read() if prompt is None else prompt
    if not text.strip():
        print("Error: the prompt is empty", file=sys.stderr)
        return 2
    try:
        completion = asyncio.run(run_single(text, _block(provider), stream=True))
    except UsageError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    except ConductorError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    if not completion.text.endswith("\n"):
        print()
    return 0


def run_batch_mode(
    provider: Provider | LLMProvider,
    prompt_files: Iterable[Path | str] | None = None,
    parallelism: int | None = None,
    verbose: bool = False,
    force: bool = False,
    input_dir: Path | None = None,
    output_dir: Path | None = None,
    recursive: bool = False,
) -> int:
    """Run a batch; returns the exit code (0 ok, 1 failures, 2 usage).

    The seed's signature, ``run_batch_mode(provider, prompt_files, parallelism, verbose,
    force, input_dir, output_dir)``: ``prompt_files`` are exactly the prompts to run (as
    ``--files-from``), or None to scan ``input_dir`` (``recursive`` for subfolders).
    """
    from flows.batch_run import run_batch_mode as run

    return run(
        _block(provider),
        prompt_files,
        parallelism,
        verbose,
        force,
        input_dir,
        output_dir,
        recursive,
    )
