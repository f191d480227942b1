"""Semantic dedup, optional: an embeddings model catches what strings cannot ("Arc de
Triomphe" / "Triumphal Arch").

``SemanticIndex`` keeps one unit vector per text it embedded (the cache: each attribute,
and each duplicate, is embedded once per run) and answers, for the new items of one answer,
which of them mean the same as a known attribute or as an earlier item of the same answer:
cosine similarity at least ``threshold``. All the items of one answer go in a single
embeddings request. Comparison is plain Python (no numpy): about known × dimensions
multiplications per item, fine for a few thousand attributes.

The model is any litellm embeddings model, named like a route: ``openai:text-embedding-3-
small``, ``lmstudio:<model>`` or ``openai:<model>`` with ``OPENAI_BASE_URL`` pointing at a
local OpenAI-compatible ``/v1/embeddings``, ``litellm:<litellm model string>``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Awaitable, Callable, Iterable

from blocks.errors import ProviderUnavailable, UsageError

__all__ = ["DEFAULT_SEMANTIC_THRESHOLD", "Embed", "SemanticIndex", "embedder"]

#: Cosine similarity from which two attributes mean the same.
DEFAULT_SEMANTIC_THRESHOLD = 0.9

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


def embedder(model: str) -> Embed:
    """The embeddings call for ``model`` ("provider:model"); key problems raise here."""
    from blocks.llm_provider import provider_from_env
    from blocks.providers.litellm_backend import embed

    kind, colon, name = model.partition(":")
    if not colon or not kind or not name:
        raise UsageError(f"--semantic-model {model!r} must be provider:model")
    provider = provider_from_env(kind, model=name, retries=0)
    if provider.spec.backend != "litellm":
        raise UsageError(f"--semantic-model: provider {kind!r} has no embeddings API")
    provider.check_ready()

    async def call(texts: list[str]) -> list[list[float]]:
        return await embed(provider, texts)

    return call


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


class SemanticIndex:
    """Unit vectors of the known attributes and the check of new ones against them.

    Args:
        embed: the embeddings call (``embedder``), a list of texts in, a vector each out.
        threshold: cosine similarity (0-1] from which two attributes are one.
    """

    def __init__(self, embed: Embed, threshold: float = DEFAULT_SEMANTIC_THRESHOLD) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self._embed = embed
        self.threshold = threshold
        self._vectors: dict[str, list[float]] = {}  # the known attributes
        self._cache: dict[str, list[float]] = {}  # every text embedded, duplicates included
        #: Embeddings requests made, and texts embedded.
        self.requests = 0
        self.embedded = 0

    def __len__(self) -> int:
        return len(self._vectors)

    async def add_known(self, texts: Iterable[str], batch: int = 256) -> None:
        """Embed attributes already known (a resumed run), in batches."""
        unique = list(dict.fromkeys(texts))
        missing = [t for t in unique if t not in self._cache]
        for start in range(0, len(missing), batch):
            await self._call(missing[start : start + batch])
        for text in unique:
            self._vectors[text] = self._cache[text]

    async def duplicates(self, texts: list[str]) -> dict[str, str]:
        """Of ``texts`` (the new items of one answer, in order), those that mean the same as
        a known attribute or an earlier one of them: text -> the attribute it repeats.

        One embeddings request for the texts not seen before. The texts kept are remembered
        as known.
        """
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            await self._call(missing)
        found: dict[str, str] = {}
        for text in texts:
            if text in self._vectors:
                continue  # known already (the caller's string dedup says so too)
            vector = self._cache[text]
            match = self._closest(vector)
            if match is not None:
                found[text] = match
            else:
                self._vectors[text] = vector
        return found

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts already embedded."""
        return sum(map(operator.mul, self._cache[a], self._cache[b]))

    def _closest(self, vector: list[float]) -> str | None:
        best, best_text = self.threshold, None
        for text, known in self._vectors.items():
            score = sum(map(operator.mul, vector, known))
            if score >= best:
                best, best_text = score, text
        return best_text

    async def _call(self, texts: list[str]) -> None:
        self.requests += 1
        self.embedded += len(texts)
        vectors = await self._embed(texts)
        if len(vectors) != len(texts) or any(not v for v in vectors):
            raise ProviderUnavailable(f"{len(vectors)} embeddings for {len(texts)} texts")
        for text, vector in zip(texts, vectors, strict=True):
            self._cache[text] = _unit(vector)
