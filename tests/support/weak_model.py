"""A scripted "weak model" for ``LLMServer.reply``: how a small local model answers explore's
prompt (the shapes of ``tests/data/weak_model/``), with a known truth to score against.

It knows ``VOCABULARY`` (attractions of one imaginary city, the popular ones far more often
named) and answers a request for a list with: a preamble, sometimes our prompt repeated, the
list (popular names first, variants "The X" and slips of the keyboard now and then, a
sentence of description after some names), and often a closing remark or a ramble that only
max_tokens stops. It half obeys "do not repeat these": each known name listed in the prompt
is skipped with probability ``obey``. Deterministic for a given seed and call order.

``truth`` maps every spelling it wrote as a name to the name it meant; anything else in an
output is junk.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["VOCABULARY", "WeakModel"]

_NAMES = [
    "Valdor",
    "Amberlin",
    "Corvina",
    "Meliss",
    "Thandor",
    "Belmar",
    "Rivoli",
    "Ostrava",
    "Quillon",
    "Sarnac",
    "Elmira",
    "Fenwick",
    "Gorlan",
    "Halvard",
    "Istrel",
    "Jovanne",
    "Kestrel",
    "Lorival",
    "Marrow",
    "Nivelle",
    "Orsini",
    "Pellam",
    "Quentin",
    "Rossard",
    "Solenne",
    "Tavish",
    "Ulmara",
    "Verrine",
    "Wexford",
    "Ysolde",
    "Zanetti",
    "Aubrac",
    "Brissac",
    "Calloway",
    "Delaunay",
    "Estienne",
    "Fontaine",
    "Garnier",
    "Hallstatt",
    "Isembard",
]
_KINDS = [
    "Tower",
    "Museum",
    "Garden",
    "Bridge",
    "Cathedral",
    "Market",
    "Palace",
    "Fountain",
    "Gallery",
    "Theatre",
]

#: Every true attribute, most popular first.
VOCABULARY = [f"{name} {kind}" for name in _NAMES for kind in _KINDS]

_RAMBLE = [
    "The city is also famous for its food and its many little cafés along the river.",
    "Many visitors come every year to see these wonderful places and take photos.",
    "It is a beautiful city with a long history and there is always something to do.",
    "You can also walk along the old streets and enjoy the view from the hills.",
]


def _slip(name: str, rng: random.Random) -> str:
    """A slip of the keyboard inside the longest word: two neighbours swapped."""
    words = name.split()
    i = max(range(len(words)), key=lambda k: len(words[k]))
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


class WeakModel:
    """``LLMServer.reply`` for explore's prompt, or any prompt asking for a list."""

    def __init__(self, seed: int = 0, *, obey: float = 0.5, ramble: float = 0.5) -> None:
        self.rng = random.Random(seed)
        self.obey = obey
        self.ramble = ramble
        self.truth: dict[str, str] = {name: name for name in VOCABULARY}
        self._weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(VOCABULARY))]

    def __call__(self, body: dict[str, Any]) -> str:
        rng = self.rng
        prompt = body["messages"][-1]["content"]
        prompt_lines = prompt.splitlines()
        topic = next((line[7:] for line in prompt_lines if line.startswith("Topic: ")), "it")
        known = {line[2:] for line in prompt_lines if line.startswith("- ")}
        lines: list[str] = []
        if rng.random() < 0.7:
            lines.append(f"Here are some attributes of {topic}:")
        if rng.random() < 0.25 and prompt_lines:
            lines.append(prompt_lines[0])  # "Topic: ..."
        if rng.random() < 0.2 and len(prompt_lines) > 2:
            lines.append(prompt_lines[2])  # "Reply with a numbered list, ..."
        names: list[str] = []
        while len(names) < 10:
            name = rng.choices(VOCABULARY, self._weights)[0]
            if name in names or (name in known and rng.random() < self.obey):
                continue
            names.append(name)
        for number, name in enumerate(names, 1):
            roll = rng.random()
            if roll < 0.08:
                written = f"The {name}"
            elif roll < 0.12:
                written = _slip(name, rng)
            else:
                written = name
            self.truth.setdefault(written, name)
            if rng.random() < 0.15:
                written += f": a famous {name.split()[-1].lower()} that everyone should visit."
            lines.append(f"{number}. {written}")
            if rng.random() < 0.1:
                lines.append(f"The {name} is one of the best places in {topic}.")
        if rng.random() < 0.6:
            lines.append("I hope this helps! Let me know if you want more.")
        if rng.random() < self.ramble:
            lines += [rng.choice(_RAMBLE) for _ in range(40)]  # until max_tokens stops it
        return "\n".join(lines)
