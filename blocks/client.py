"""``ProviderClient``: a provider's configuration plus the calls, without Prefect.

``LLMProvider`` (blocks/llm_provider.py) is this plus Prefect's Block. A single ``run``
without a Prefect API needs only this, and so never imports Prefect (≈1.1 s).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Self

from blocks import tracing
from blocks.config import ProviderConfig
from blocks.errors import EmptyResponse, ProviderError, ProviderTimeout, Truncated
from blocks.providers import load_backend
from blocks.providers.base import Message, OnText, Segment
from blocks.result import Completion, Usage
from blocks.retry import retry_call

__all__ = ["CONTINUE_PROMPT", "ProviderClient"]

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue exactly where it stopped, without repeating "
    "anything and without any preamble."
)

#: A continuation whose first characters (at least this many) already occur in the answer
#: repeats it: small models answer "continue" by starting over.
_REPEAT_PROBE = (20, 80)


class ProviderClient(ProviderConfig):
    """A provider's configuration (``ProviderConfig``) and the client that calls it."""

    @classmethod
    def from_config(cls, config: ProviderConfig) -> Self:
        """The client for ``config`` (``config`` itself when it is one already)."""
        if isinstance(config, cls):
            return config
        return cls(**config.model_dump(exclude_unset=True))

    # -- calls -----------------------------------------------------------------------------

    async def acomplete(
        self, prompt: str | list[Message], *, on_text: OnText | None = None
    ) -> Completion:
        """Complete one prompt: retries, continuation after ``finish_reason=length``.

        Continuing stops early when a continuation repeats what came before (the repeat is
        paid for but not added to the text); the answer then counts as truncated.

        Args:
            prompt: the user prompt, or a full list of chat messages.
            on_text: called with each piece of text as it arrives (streaming providers), or
                once with the whole answer of each segment otherwise.

        Raises:
            NeedsKey: the provider needs a key that is not set.
            ProviderError: the call failed and retrying did not help.
            Truncated: the answer is still cut off (unless ``accept_truncated``); it carries
                the completion.
        """
        self.check_ready()
        backend = load_backend(self.spec)  # imports happen here, before any deadline
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
        repeated = 0  # the number of the continuation that repeated, if one did
        # One span per completion, retries and continuations included (no-op unless enabled).
        with tracing.llm_span(self, messages) as span:
            for number in range(self.max_continuations + 1):
                segment, tries = await retry_call(
                    lambda messages=messages: self._attempt(backend, messages, on_text),
                    policy,
                    rng=rng,
                    on_retry=span.on_retry,
                )
                attempts += tries
                usage += segment.usage
                if number and _repeats(pieces, segment.text):
                    repeated = number
                    break
                pieces.append(segment.text)
                if segment.finish_reason != "length":
                    break
                messages = [
                    *messages,
                    {"role": "assistant", "content": segment.text},
                    {"role": "user", "content": CONTINUE_PROMPT},
                ]
            completion = Completion(
                text="".join(pieces),
                finish_reason="length" if repeated else segment.finish_reason,
                usage=usage,
                response_id=segment.response_id,
                provider=self.kind,
                model=self.model_name,
                segments=len(pieces),
                attempts=attempts,
                elapsed=time.perf_counter() - started,
            )
            span.record(completion)
            if completion.truncated and not self.accept_truncated:
                why = (
                    f": continuation {repeated} repeated what came before"
                    if repeated
                    else f" after {self.max_continuations} continuations (finish_reason=length)"
                )
                raise Truncated(
                    f"{self.label}: answer truncated{why}; raise max_tokens, or keep such "
                    "answers with --accept-truncated",
                    completion=completion,
                )
        return completion

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


def _repeats(pieces: list[str], piece: str) -> bool:
    """Whether a continuation only repeats the answer so far (a restart or a copy)."""
    text = piece.strip()
    if not text:
        return False
    shortest, longest = _REPEAT_PROBE
    if len(text) < shortest:
        return text == pieces[-1].strip()
    return text[:longest] in "".join(pieces)
