"""The offline provider: no key, no network, seeded and deterministic.

The answer depends only on the seed and the conversation, so a batch gives the same files
whatever the concurrency. It shapes its answer after what the prompt asks for: a prompt that
mentions JSON gets a fenced JSON object wrapped in a sentence of prose, one that asks for a
list gets a numbered list, anything else gets a short markdown text.

Options (``LLMProvider.options``): ``seed`` (int, default 0), ``latency`` (seconds per call,
default 0), ``failure_rate`` (0..1: that share of attempts fails with a retryable 503),
``items`` (list length, default 10).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
from typing import TYPE_CHECKING

from blocks.errors import ProviderUnavailable
from blocks.providers.base import Message, OnText, Segment
from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["attempt"]

_ADJECTIVES = [
    "ancient",
    "amber",
    "brisk",
    "calm",
    "crimson",
    "distant",
    "eager",
    "fabled",
    "gilded",
    "hidden",
    "humble",
    "iron",
    "lively",
    "lunar",
    "misty",
    "noble",
    "open",
    "painted",
    "quiet",
    "rustic",
    "scenic",
    "silent",
    "solar",
    "stone",
    "tidal",
    "urban",
    "velvet",
    "vivid",
    "wild",
    "windy",
    "young",
    "zesty",
]
_NOUNS = [
    "arch",
    "bazaar",
    "bridge",
    "canal",
    "castle",
    "cathedral",
    "courtyard",
    "garden",
    "gallery",
    "harbor",
    "hill",
    "lantern",
    "library",
    "market",
    "meadow",
    "monument",
    "museum",
    "orchard",
    "palace",
    "park",
    "plaza",
    "pier",
    "quarter",
    "river",
    "square",
    "staircase",
    "terrace",
    "theater",
    "tower",
    "valley",
    "vineyard",
    "workshop",
]
_attempts = itertools.count()


def _rng(provider: LLMProvider, messages: list[Message]) -> random.Random:
    digest = hashlib.sha256(
        json.dumps([provider.options.get("seed", 0), messages], sort_keys=True).encode()
    ).digest()
    return random.Random(digest)


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _answer(prompt: str, rng: random.Random, items: int) -> str:
    lowered = prompt.lower()
    phrases = [f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}" for _ in range(items)]
    if "json" in lowered:
        body = {
            "title": phrases[0].title(),
            "items": phrases[1:],
            "score": rng.randint(1, 100),
        }
        return f"Here is the JSON you asked for:\n\n```json\n{json.dumps(body, indent=2)}\n```\n"
    if "list" in lowered:
        return "\n".join(f"{i}. {p.title()}" for i, p in enumerate(phrases, 1))
    return (
        f"# {phrases[0].title()}\n\n"
        + " ".join(f"The {p} is worth a visit." for p in phrases[1:])
        + "\n"
    )


async def attempt(
    provider: LLMProvider, messages: list[Message], on_text: OnText | None
) -> Segment:
    """One deterministic answer after the configured latency; may fail on purpose."""
    options = provider.options
    latency = float(options.get("latency", 0.0))
    if latency:
        await asyncio.sleep(latency)
    failure_rate = float(options.get("failure_rate", 0.0))
    if failure_rate and random.Random(next(_attempts)).random() < failure_rate:
        raise ProviderUnavailable(
            "injected failure (failure_rate option)", provider="random", status_code=503
        )
    rng = _rng(provider, messages)
    text = _answer(messages[-1]["content"], rng, int(options.get("items", 10)))
    if on_text:
        on_text(text)
    prompt_words = sum(_words(m["content"]) for m in messages)
    return Segment(
        text=text,
        finish_reason="stop",
        usage=Usage(prompt_tokens=prompt_words, completion_tokens=_words(text), cost=0.0),
        response_id=f"random-{rng.getrandbits(64):016x}",
    )
