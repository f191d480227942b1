"""``LLMProvider``: the Prefect Block that configures one provider and performs completions."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect.utilities.asyncutils import run_coro_as_sync

from blocks import tracing
from blocks.config import REASONING_EFFORTS, ProviderConfig, config_from_env
from blocks.errors import EmptyResponse, ProviderError, ProviderTimeout
from blocks.limits import ProviderGate, gate_for
from blocks.providers import load_backend
from blocks.providers.base import Message, OnText, Segment
from blocks.result import Completion, Usage
from blocks.retry import retry_call

__all__ = ["REASONING_EFFORTS", "LLMProvider", "provider_from_env"]

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue exactly where it stopped, without repeating "
    "anything and without any preamble."
)

DEFAULT_TIMEOUT = 120.0


class LLMProvider(ProviderConfig, Block):
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

    @classmethod
    def from_config(cls, config: ProviderConfig) -> LLMProvider:
        """The block for ``config`` (``config`` itself when it is one already)."""
        if isinstance(config, cls):
            return config
        return cls(**config.model_dump(exclude_unset=True))

    def gate(self) -> ProviderGate:
        """The block's limits on the running loop (blocks/limits.py): shared by every flow and
        call using this block, and, once a run's ``plan_run`` has asked a Prefect server, sized
        by the block's global concurrency limit there."""
        return gate_for(self)

    # -- calls -----------------------------------------------------------------------------

    async def acomplete(
        self, prompt: str | list[Message], *, on_text: OnText | None = None
    ) -> Completion:
        """Complete one prompt: retries, continuation after ``finish_reason=length``.

        Args:
            prompt: the user prompt, or a full list of chat messages.
            on_text: called with each piece of text as it arrives (streaming providers), or
                once with the whole answer of each segment otherwise.

        Raises:
            NeedsKey: the provider needs a key that is not set.
            ProviderError: the call failed and retrying did not help.
        """
        self.check_ready()
        backend = load_backend(self.spec)
        messages: list[Message] = (
            [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        )
        policy = self.retry_policy()
        rng = random.Random()
        started = time.perf_counter()
        pieces: list[str] = []
        usage = Usage()
        attempts = 0
        segment = Segment(text="", finish_reason=None, usage=Usage())
        # One span per completion, retries and continuations included (no-op unless enabled).
        with tracing.llm_span(self, messages) as span:
            for _ in range(self.max_continuations + 1):
                segment, tries = await retry_call(
                    lambda messages=messages: self._attempt(backend, messages, on_text),
                    policy,
                    rng=rng,
                    on_retry=span.on_retry,
                )
                attempts += tries
                pieces.append(segment.text)
                usage += segment.usage
                if segment.finish_reason != "length":
                    break
                messages = [
                    *messages,
                    {"role": "assistant", "content": segment.text},
                    {"role": "user", "content": CONTINUE_PROMPT},
                ]
            completion = Completion(
                text="".join(pieces),
                finish_reason=segment.finish_reason,
                usage=usage,
                response_id=segment.response_id,
                provider=self.kind,
                model=self.model_name,
                segments=len(pieces),
                attempts=attempts,
                elapsed=time.perf_counter() - started,
            )
            span.record(completion)
        return completion

    def complete(self, prompt: str | list[Message], *, on_text: OnText | None = None) -> Completion:
        """Synchronous twin of ``acomplete`` (not for use inside a running event loop)."""
        return run_coro_as_sync(self.acomplete(prompt, on_text=on_text))  # type: ignore[return-value]

    async def _attempt(
        self, backend: Any, messages: list[Message], on_text: OnText | None
    ) -> Segment:
        emitted = 0

        def counting(text: str) -> None:
            nonlocal emitted
            emitted += len(text)
            on_text(text)  # type: ignore[misc]

        try:
            # A hard deadline for every backend: litellm ignores its timeout on some streams.
            async with asyncio.timeout(self.timeout + 1):
                segment: Segment = await backend(self, messages, counting if on_text else None)
        except TimeoutError:
            error = ProviderTimeout(f"no answer within {self.timeout:g}s", provider=self.kind)
            if emitted:
                error.retryable = False
            raise error from None
        except ProviderError as error:
            if emitted:
                # Text already went out (e.g. to stdout): a retry would print it twice.
                error.retryable = False
                error.args = (f"stream interrupted after {emitted} characters: {error.args[0]}",)
            raise
        if not segment.text.strip() and segment.finish_reason != "length":
            raise EmptyResponse("the model returned an empty answer", provider=self.kind)
        return segment


def provider_from_env(kind: str | None = None, **overrides: Any) -> LLMProvider:
    """The provider block from the environment, with non-None ``overrides`` winning (see
    ``blocks.config.config_from_env``)."""
    return config_from_env(kind, cls=LLMProvider, **overrides)
