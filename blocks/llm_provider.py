"""``LLMProvider``: the Prefect Block that configures one provider and performs completions."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect.utilities.asyncutils import run_coro_as_sync

from blocks.client import CONTINUE_PROMPT, ProviderClient
from blocks.config import REASONING_EFFORTS, config_from_env
from blocks.limits import ProviderGate, gate_for
from blocks.providers.base import Message, OnText
from blocks.result import Completion

__all__ = ["CONTINUE_PROMPT", "REASONING_EFFORTS", "LLMProvider", "provider_from_env"]

DEFAULT_TIMEOUT = 120.0


class LLMProvider(ProviderClient, Block):
    """One LLM provider: which one, which model, how to reach it and how hard to push it
    (the fields of ``blocks.config.ProviderConfig``), and the client that calls it.

    Usable without any Prefect server (construct it in code or with ``provider_from_env``)
    and loadable by name when one exists (``LLMProvider.load("my-openai")``).

    Example:
        ```python
        from prefect import flow
        from blocks import LLMProvider

        @flow
        async def ask() -> str:
            provider = LLMProvider(kind="random", options={"seed": 7})
            completion = await provider.acomplete("Name three rivers")
            return completion.text
        ```
    """

    _block_type_name = "LLM Provider"
    _block_type_slug = "llm-provider"
    _description = "An LLM provider for llm-conductor: kind, model, endpoint, key and limits."

    _secret_fields: ClassVar[list[str]] = ["api_key"]

    def gate(self) -> ProviderGate:
        """The block's limits on the running loop (blocks/limits.py): shared by every flow and
        call using this block, and, once a run's ``plan_run`` has asked a Prefect server, sized
        by the block's global concurrency limit there."""
        return gate_for(self)

    def complete(self, prompt: str | list[Message], *, on_text: OnText | None = None) -> Completion:
        """Synchronous twin of ``acomplete`` (not for use inside a running event loop)."""
        return run_coro_as_sync(self.acomplete(prompt, on_text=on_text))  # type: ignore[return-value]


def provider_from_env(kind: str | None = None, **overrides: Any) -> LLMProvider:
    """The provider block from the environment, with non-None ``overrides`` winning (see
    ``blocks.config.config_from_env``)."""
    return config_from_env(kind, cls=LLMProvider, **overrides)
