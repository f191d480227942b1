"""The labelled attribute pairs of ``tests/data/dedup_pairs.tsv`` and how a rule scores on
them; shared by ``tests/test_attributes.py`` and ``bench/dedup_bench.py``."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["PAIRS_FILE", "STRING_KINDS", "Pair", "Score", "load_pairs", "score"]

PAIRS_FILE = Path(__file__).resolve().parent.parent / "data" / "dedup_pairs.tsv"
#: Kinds of true duplicates that a string rule can see; "synonym" needs an embeddings model.
STRING_KINDS = frozenset(
    {"case", "punctuation", "spacing", "article", "plural", "accent", "typo", "typo1"}
)


class Pair(NamedTuple):
    kind: str
    same: bool
    a: str
    b: str


def load_pairs(path: Path = PAIRS_FILE) -> list[Pair]:
    with path.open(encoding="utf-8", newline="") as file:
        lines = (line for line in file if not line.startswith("#"))
        return [
            Pair(row["kind"], row["same"] == "1", row["a"], row["b"])
            for row in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


@dataclass
class Score:
    """Merges decided on the pairs: true/false positives, misses, per kind."""

    false_merges: list[Pair] = field(default_factory=list)
    misses: list[Pair] = field(default_factory=list)
    merged: int = 0
    true_merges: int = 0
    duplicates: int = 0

    @property
    def precision(self) -> float:
        return self.true_merges / self.merged if self.merged else 1.0

    @property
    def recall(self) -> float:
        return self.true_merges / self.duplicates if self.duplicates else 1.0


def score(pairs: list[Pair], merges: Callable[[Pair], bool]) -> Score:
    """Score ``merges(pair)`` (True: the rule takes ``b`` for a duplicate of ``a``)."""
    result = Score()
    for pair in pairs:
        merged = merges(pair)
        result.merged += merged
        result.duplicates += pair.same
        if merged and pair.same:
            result.true_merges += 1
        elif merged:
            result.false_merges.append(pair)
        elif pair.same:
            result.misses.append(pair)
    return result
