"""Topic exploration, the Prefect-free core: read attribute lists out of model answers and
keep one copy of each attribute, whatever its spelling.

Three pieces:

* ``parse_answer`` turns a model's answer (numbered or bulleted lines, one comma-separated
  line, a JSON array, possibly fenced in Markdown) into clean display strings, and counts
  the lines that are not attributes (echoes of the prompt, sentences, over-long lines,
  fragments, numbers) by reason; ``parse_attributes`` gives only the strings.
* ``normalise`` turns one display string into a comparison key, so that "Eiffel Tower",
  "the eiffel tower", "Eiffel Towers" and "EIFFEL-TOWER!" all give ``"eiffel tower"``.
* ``AttributeIndex`` keeps the first spelling of every distinct attribute. An attribute is a
  duplicate when its key equals a known key, when it equals one with the spaces removed
  ("Notre Dame" / "Notredame"), when a key of several words equals one without accents
  ("Sacré-Cœur" / "Sacre Coeur"), or when it is a *near duplicate*: one typo away from a
  known key (below), found among a few candidate keys by blocking.

What counts as a near duplicate
-------------------------------
A one-letter difference in a word is a different word far more often than a typo ("Desert"
/ "Dessert", "Marie" / "Maria Curie", "Hotel de Ville" / "Villa", "Bologna" / "Bologne"), so
a near duplicate has the same words as a known key but one, and that one differs by a slip
of the keyboard *inside* the word (same first and last letter; see ``_is_typo``): a doubled
letter written once or a letter doubled ("Eifel Tower"), another letter left out or added in
a word of 6+ letters ("Luxemburg Gardens"), two neighbours swapped ("Louvre Musuem"), one
letter changed before the last three in a word of 7+ letters ("Arc de Triumphe"), or
"-tre" / "-ter" ("Pompidou Center"). Accents do not count in keys of several words. A name
of a single word has no other word to confirm the slip: only words of 8+ letters, without a
changed letter, merge ("Versailes", "Coloseum"); "Dessert" / "Desert", "Theatre" / "Theater"
and "Complement" / "Compliment" stay apart. Numbers never differ ("Apollo 1" / "Apollo 11").
Accepted trade-off: a doubled letter inside a name of several words is taken for a typo
("Sahara Desert" / "Sahara Dessert" merge). Not merged: a word added or dropped ("Louvre" /
"Louvre Pyramid", a museum and its entrance), words swapped, two words changed, synonyms
("Arc de Triomphe" / "Triumphal Arch": see ``tasks.semantic``).

On top of the rule, the pair must score at least ``threshold`` on ``fuzz.ratio``'s scale
(100 × (1 − edits / total length), a swap counting one edit): at the default 92, one slip
merges keys of 12+ characters in all ("Eiffel Tower" / "Eifel Tower": 95.7), a changed letter
keys of 13+. ``tests/data/dedup_pairs.tsv`` holds 270 labelled pairs; ``bench/dedup_bench.py``
reports the rule's precision and recall on them.

Near-duplicate blocking (why ``add`` stays well under 20 µs with 100,000 known attributes)
-------------------------------------------------------------------------------------------
Comparing a new key with every known key costs milliseconds at 100k, so each known key is
filed under a few *signatures* (hashes in one dict), and a new key is compared, with one
``rapidfuzz.process.extract`` call, only with the keys that share a signature with it:

* a key of several words is filed, for each word of three or more letters, under "all the
  words, with this one cut to its first letter" (accents removed);
* a key of one word (8+ letters) is filed under the word and under each variant with one
  letter (not the first) deleted (a deletion neighbourhood: words within one edit share one).

A bucket holds at most ``MAX_BUCKET`` keys and a lookup compares at most ``MAX_CANDIDATES``;
past that a near duplicate can be missed, never a wrong merge made. Keys too short to have
any near duplicate at the threshold skip the fuzzy step.
"""

from __future__ import annotations

import json
import math
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from rapidfuzz import fuzz, process

__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_ATTRIBUTE_LENGTH",
    "MAX_BUCKET",
    "MAX_CANDIDATES",
    "MAX_WORDS",
    "Attribute",
    "AttributeIndex",
    "ParsedAnswer",
    "normalise",
    "parse_answer",
    "parse_attributes",
    "reject_reason",
]

#: Default score (0-100, ``fuzz.ratio``'s scale) from which a typo makes a near duplicate.
DEFAULT_THRESHOLD = 92.0
#: Items longer than this are not attributes but prose (see ``parse_answer``).
MAX_ATTRIBUTE_LENGTH = 200
#: Most words an attribute may have; longer lines are prose (see ``parse_answer``).
MAX_WORDS = 10
#: Most keys one blocking bucket holds; later keys are not filed in a full bucket.
MAX_BUCKET = 48
#: Most candidate keys one lookup compares with ``fuzz.ratio``.
MAX_CANDIDATES = 64

# --------------------------------------------------------------------------------------------
# parse_answer
# --------------------------------------------------------------------------------------------


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_LIST_MARKER = re.compile(r"^(?:\(?\d{1,3}[.)]|[-*+•‣◦▪●·–—])\s+(.+)$")
_CHATTER = re.compile(
    r"^(?:here\b|(?:sure|certainly|of course|okay|absolutely|great)\s*[,.!:]"
    r"|let me know\b|i hope\b|hope this\b|feel free\b)",
    re.IGNORECASE,
)
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_TWO_SENTENCES = re.compile(r"[a-z][.!?]\s+[A-Z]")
_HEAD_SPLIT = re.compile(r"\s*(?::|,|\s[-–—]\s)\s*")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "„": "“", "`": "`", "「": "」"}
_FILLERS = frozenset({"etc", "etc.", "and more", "and so on", "...", "…"})
_JSON_NAME_FIELDS = ("name", "attribute", "title", "text", "value", "item")


class ParsedAnswer(NamedTuple):
    """What ``parse_answer`` read: the items kept, and the lines dropped by reason."""

    items: list[str]
    #: reason -> lines dropped: "echo" (our prompt or the topic repeated), "sentence"
    #: (preambles, closing remarks, descriptions), "too_long" (over ``max_words``),
    #: "fragment" (under 3 letters), "number", "unfinished" (the line cut at max_tokens).
    rejected: dict[str, int]


def parse_attributes(
    text: str,
    *,
    max_length: int = MAX_ATTRIBUTE_LENGTH,
    max_words: int = MAX_WORDS,
    echoes: Iterable[str] = (),
    truncated: bool = False,
) -> list[str]:
    """The attributes of one model answer, in the order given (``parse_answer``'s items).

    Example:
        >>> parse_attributes("Here are 3:\\n1. **Eiffel Tower**\\n2. Louvre\\n3. 'Orsay'.")
        ['Eiffel Tower', 'Louvre', 'Orsay']
    """
    return parse_answer(
        text, max_length=max_length, max_words=max_words, echoes=echoes, truncated=truncated
    ).items


def parse_answer(
    text: str,
    *,
    max_length: int = MAX_ATTRIBUTE_LENGTH,
    max_words: int = MAX_WORDS,
    echoes: Iterable[str] = (),
    truncated: bool = False,
) -> ParsedAnswer:
    """Read the attributes out of one model answer; the one rule of what is an attribute.

    Accepted shapes: numbered lines (``1. x``, ``1) x``), bulleted lines (``- x``, ``* x``,
    ``• x``), one comma- (or semicolon-) separated line, plain lines (one attribute each), and
    JSON: an array of strings or of objects with a ``name``, an object holding such an array,
    or an object mapping names to descriptions. Any of these may sit in a Markdown code fence
    (``json`` or none). A truncated JSON array keeps its complete strings. In a list, a line
    without a marker is an item too when it looks like one ("café" among numbered lines);
    an indented one under an item is that item's description.

    Each item is cleaned: Markdown bold (``**x**``, ``__x__``) and surrounding quotes are
    removed, whitespace collapsed, a trailing ``,``/``;`` dropped, and one trailing ``.`` dropped
    unless the item has other dots ("Washington D.C."). Dropped without counting: headings
    (lines starting with ``#``, short items ending with ``:``), items without a letter or
    digit, fillers such as "etc.". Dropped and counted by reason (``ParsedAnswer.rejected``):

    * ``echo``: a line of ``echoes`` (our prompt, the topic) or three or more of its words;
    * ``number``: no letter ("42", "1889");
    * ``fragment``: fewer than 3 letters, or only one-letter words ("ab", "a b c d e f g");
    * ``sentence``: chatter ("Here are some attractions:", "Let me know..."), a line ending in
      ``:`` of 3+ words, a line of 3+ words with a verb or pronoun ending in ``.``/``!``/``?``
      or of 6+ words with one, a line of 7+ words ending in ``.``, two sentences;
    * ``too_long``: more than ``max_words`` words or ``max_length`` characters.

    A sentence or over-long item "Name: description" (or "Name - description", "Name, a
    description") is cut to its head instead, when the head is a short name ("Eiffel
    Tower: The iconic iron tower built in 1889." gives "Eiffel Tower"); a short one is kept
    whole (the colon may be part of the attribute: "Colour: red").
    * ``unfinished``: with ``truncated`` (the answer was cut at max_tokens), its last line.

    Args:
        text: the model's answer.
        max_length: longest item kept, in characters.
        max_words: most words an item may have.
        echoes: lines of our own prompt (and the topic) that the model may repeat.
        truncated: the answer was cut (finish_reason "length"): its last line is unfinished.

    Returns:
        The cleaned items, duplicates included (``AttributeIndex`` removes them), and the
        count of rejected lines by reason.
    """
    rejected: dict[str, int] = {}
    body = _unfence(text)
    raw_items = _parse_json(body)
    if raw_items is None:
        raw_items = _parse_lines(body, truncated, rejected)
    echo_keys = _echo_keys(echoes)
    items = []
    for raw in raw_items:
        item, reason = _screen(raw, max_length, max_words, echo_keys)
        if item:
            items.append(item)
        elif reason:
            rejected[reason] = rejected.get(reason, 0) + 1
    return ParsedAnswer(items, rejected)


def reject_reason(
    text: str,
    *,
    max_length: int = MAX_ATTRIBUTE_LENGTH,
    max_words: int = MAX_WORDS,
    echoes: Iterable[str] = (),
) -> str | None:
    """Why one item (a line already read as an attribute, e.g. from an older run's journal)
    is not an attribute by ``parse_answer``'s rule, or None when it is one."""
    item, reason = _screen(text, max_length, max_words, _echo_keys(echoes))
    return None if item else reason or "filler"


def _unfence(text: str) -> str:
    blocks = _FENCE.findall(text)
    return "\n".join(blocks) if blocks else text


def _parse_json(body: str) -> list[str] | None:
    stripped = body.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        if stripped[0] != "[":
            return None
        # A truncated array: keep every complete string literal.
        salvaged = []
        for literal in _JSON_STRING.findall(stripped):
            try:
                salvaged.append(json.loads(literal))
            except ValueError:
                continue
        return salvaged or None
    return _json_items(value, depth=0)


def _json_items(value: object, *, depth: int) -> list[str] | None:
    if isinstance(value, list):
        items: list[str] = []
        for element in value:
            if isinstance(element, str):
                items.append(element)
            elif isinstance(element, dict):
                name = next(
                    (element[f] for f in _JSON_NAME_FIELDS if isinstance(element.get(f), str)),
                    None,
                )
                if name is None:
                    name = next((v for v in element.values() if isinstance(v, str)), None)
                if name is not None:
                    items.append(name)
        return items
    if isinstance(value, dict) and depth == 0:
        for inner in value.values():
            if isinstance(inner, list):
                return _json_items(inner, depth=1)
        # {"Eiffel Tower": "iron lattice tower", ...}: the names are the keys.
        return [name for name in value if isinstance(name, str)]
    return None


def _parse_lines(body: str, truncated: bool, rejected: dict[str, int]) -> list[str]:
    lines = body.splitlines()
    if truncated and lines and not body.endswith("\n"):
        last = lines.pop()  # cut mid-line at max_tokens
        if last.strip():
            rejected["unfinished"] = rejected.get("unfinished", 0) + 1
            if not any(line.strip() for line in lines) and "," in last:
                lines = [last.rpartition(",")[0]]  # one comma list: its last item is cut
    marked = any(_LIST_MARKER.match(line.strip()) for line in lines)
    content = []
    in_item = False
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "```")):
            in_item = False
            continue
        if m := _LIST_MARKER.match(stripped):
            content.append(m.group(1))
            in_item = True
            continue
        if marked and in_item and line[:1].isspace():
            continue  # the description of the item above, wrapped
        in_item = False
        if _CHATTER.match(stripped):
            _, colon, rest = stripped.partition(":")
            if colon and rest.strip() and not marked:  # "Here they are: a, b, c"
                content.append(rest.strip())
            else:
                rejected["sentence"] = rejected.get("sentence", 0) + 1
            continue
        content.append(stripped)
    if len(content) == 1 and not marked:
        separator = "," if "," in content[0] else ";"
        parts = [p.strip() for p in content[0].split(separator)]
        parts = [p for p in parts if p]
        if len(parts) > 1:
            last = parts[-1]
            for conjunction in ("and ", "or "):
                if last.lower().startswith(conjunction):
                    parts[-1] = last[len(conjunction) :]
            return parts
    return content


def _strip_quotes(item: str) -> str:
    while len(item) >= 2 and _QUOTES.get(item[0]) == item[-1]:
        item = item[1:-1].strip()
    return item


# Words that make a line a sentence rather than a name (verbs and pronouns of chatter).
_SENTENCE_WORDS = _word_set(
    "is are was were be been being am has have had do does did can could will would shall "
    "should may might must i i'm i've you your we our us they their it it's its this these "
    "those here there let let's hope please feel note sure want need know"
)


# First words of instructions: the model repeating ours, or writing its own.
_IMPERATIVES = _word_set(
    "reply continue list do don't give provide write include avoid remember repeat answer use "
    "keep make"
)


def _echo_keys(echoes: Iterable[str]) -> list[str]:
    keys = []
    for line in echoes:
        key = normalise(line)
        if key:
            keys.append(f" {key} ")
    return keys


def _is_sentence(item: str, terminal: str, words: list[str], *, strict: bool = False) -> bool:
    """Whether an item reads as a sentence (``strict``: for the head of a longer line, where
    any verb or pronoun tells)."""
    n = len(words)
    if _CHATTER.match(item):
        return True
    if item.endswith(":"):
        return n >= 3
    lowered = [w.strip(".,;:!?\"'()").casefold() for w in words]
    if n >= 3 and lowered[0] in _IMPERATIVES:  # "Reply with...", "Continue exactly..."
        return True
    verb = not _SENTENCE_WORDS.isdisjoint(lowered)
    if verb and (strict or n >= 6 or (n >= 3 and terminal)):
        return True
    if terminal == "." and n >= 7:
        return True
    return n >= 4 and _TWO_SENTENCES.search(item) is not None


def _screen(
    raw: str, max_length: int, max_words: int, echo_keys: list[str]
) -> tuple[str, str | None]:
    """One item cleaned, or ``""`` and why it is not an attribute (None: not worth counting,
    such as a heading or a filler)."""
    item = " ".join(raw.split())
    item = _EMPHASIS.sub(r"\2", item).replace("**", "")
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "*_":  # *italic*
        item = item[1:-1].strip()
    item = _strip_quotes(item.rstrip(",;").strip())
    terminal = item[-1:] if item[-1:] in (".", "!", "?") else ""
    if item.endswith(".") and item.count(".") == 1:
        item = item[:-1].rstrip()
    item = _strip_quotes(item)
    if not item or item.casefold() in _FILLERS or not any(ch.isalnum() for ch in item):
        return "", None
    words = item.split()
    if item.endswith(":"):
        return "", ("sentence" if len(words) >= 3 else None)  # a preamble, or a heading
    letters = sum(ch.isalpha() for ch in item)
    if not letters:
        return "", "number"
    if letters < 3 or all(sum(ch.isalpha() for ch in w) <= 1 for w in words):
        return "", "fragment"
    if echo_keys and (key := normalise(item)):
        padded = f" {key} "
        if any(padded == e or (len(words) >= 3 and padded in e) for e in echo_keys):
            return "", "echo"
    reason = None
    if _is_sentence(item, terminal, words):
        reason = "sentence"
    elif len(words) > max_words or len(item) > max_length:
        reason = "too_long"
    if reason is not None:
        # "Name: a description that is a sentence" or "Name, a long description": the name.
        head = _HEAD_SPLIT.split(item, maxsplit=1)[0]
        if head != item and len(head) <= max_length:
            head_words = head.split()
            fits = len(head_words) <= max_words and sum(ch.isalpha() for ch in head) >= 3
            if fits and not _is_sentence(head, "", head_words, strict=True):
                return head, None
        return "", reason
    return item, None


# --------------------------------------------------------------------------------------------
# normalise
# --------------------------------------------------------------------------------------------

_ARTICLES = frozenset({"the", "a", "an"})
_APOSTROPHES = frozenset("'’ʼ‘`´")


class _FoldTable(dict[int, str]):
    """``str.translate`` table built on demand: letters, digits and marks stay, apostrophes
    vanish ("Peter's" -> "peters"), everything else (punctuation, symbols) becomes a space."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        if char in _APOSTROPHES:
            out = ""
        elif unicodedata.category(char)[0] in "LNM":
            out = char
        else:
            out = " "
        self[code] = out
        return out


_FOLD = _FoldTable()
# The same for ASCII text, as a bytes table (bytes.translate is a plain C loop).
_ASCII_FOLD = bytes(c if chr(c).isalnum() else 0x20 for c in range(128)) + bytes(range(128, 256))
_ASCII_APOSTROPHES = b"'`"


#: Plurals that name something else than their singular ("News" is not "New", "Glasses" are
#: not "Glass"): kept as they are.
_PLURALS_KEPT = _word_set(
    "news glasses sunglasses spectacles arms goods clothes customs manners remains quarters "
    "headquarters outskirts premises surroundings grounds works letters spirits savings "
    "earnings belongings lodgings minutes means species series physics mathematics economics "
    "politics ethics athletics gymnastics olympics thanks woods heights jeans trousers pants "
    "shorts scissors binoculars"
)
#: "-es" plurals of words that end in a single "s" (whose canonical spelling keeps it bare,
#: so that "Louis" is not "Louise"): their singular.
_ES_PLURALS = {
    "buses": "bus",
    "campuses": "campus",
    "circuses": "circus",
    "viruses": "virus",
    "bonuses": "bonus",
    "choruses": "chorus",
    "censuses": "census",
    "geniuses": "genius",
    "octopuses": "octopus",
    "crises": "crisis",
    "oases": "oasis",
    "theses": "thesis",
    "analyses": "analysis",
    "gases": "gas",
    "atlases": "atlas",
    "canvases": "canvas",
    "irises": "iris",
    "potatoes": "potato",
    "tomatoes": "tomato",
    "heroes": "hero",
    "echoes": "echo",
    "volcanoes": "volcano",
    "mosquitoes": "mosquito",
}
_SIBILANT_ENDS = ("ss", "x", "z", "ch", "sh")


def _stem_word(word: str) -> str:
    """The singular of one word, in a canonical spelling that its plural shares.

    The plural "s" goes (cats -> cat, houses -> house, cities -> citie), then the singular is
    spelled as its "-es" plural would leave it: glass/glasses -> glasse, box/boxes -> boxe,
    church/churches -> churche, city/cities -> citie. So one rule
    serves both forms without guessing which final "e" belongs to the word ("Cape" stays
    apart from "Cap", "Louise" from "Louis"). Words ending in "ss", "us", "is" are singulars
    (glass, campus, Paris); the "-es" plurals of such words are looked up (``_ES_PLURALS``:
    buses -> bus, and a few "-oes": potatoes -> potato); lexicalised plurals
    (``_PLURALS_KEPT``: news, glasses, goods...) are kept; words of one or two letters and
    words with digits are untouched. The result is a key, never shown.
    """
    n = len(word)
    if n < 3 or not word.isalpha() or word in _PLURALS_KEPT:
        return word
    singular = _ES_PLURALS.get(word)
    if singular is not None:
        return singular
    if n >= 4 and word[-1] == "s" and word[-2] not in "sui":
        word = word[:-1]
    if word.endswith(_SIBILANT_ENDS):
        return word + "e"
    if word[-1] == "y" and len(word) >= 3 and word[-2] not in "aeiouy":
        return word[:-1] + "ie"
    return word


_STEMS: dict[str, str] = {}
_STEMS_MAX = 200_000


def _stem(word: str) -> str:
    """``_stem_word`` behind a bounded cache (words repeat a lot across attributes)."""
    stem = _STEMS.get(word)
    if stem is None:
        if len(_STEMS) >= _STEMS_MAX:
            _STEMS.clear()
        stem = _STEMS[word] = _stem_word(word)
    return stem


def normalise(text: str) -> str:
    """The comparison key of one attribute.

    Steps: Unicode NFKC (full-width letters, ligatures, composed accents), ``casefold``
    ("CAFÉ" -> "café", "Straße" -> "strasse"), apostrophes removed, other punctuation and
    symbols turned into spaces, whitespace collapsed, a leading English article (the/a/an)
    dropped when more words follow, and each word's plural folded (see ``_stem``).

    Accents are kept: "Café" and "CAFÉ" give one key, "Café" and "Cafe" two (in many
    languages an accent changes the word; "resume"/"résumé", "ano"/"año"). Keys are for
    comparison only; ``AttributeIndex`` shows the first spelling it saw.

    Example:
        >>> {normalise(t) for t in ("Eiffel Tower", "the eiffel tower", "EIFFEL-TOWER!")}
        {'eiffel tower'}
    """
    return " ".join([_STEMS.get(w) or _stem(w) for w in _words(text)])


def _words(text: str) -> list[str]:
    """The folded words of ``text`` (NFKC, casefold, punctuation out, leading article out)."""
    if text.isascii():  # NFKC changes no ASCII text, and casefold is lower
        ascii_text = text.lower().encode()
        words = ascii_text.translate(_ASCII_FOLD, _ASCII_APOSTROPHES).decode().split()
    else:
        folded = unicodedata.normalize("NFKC", text).casefold()
        words = unicodedata.normalize("NFKC", folded).translate(_FOLD).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        del words[0]
    return words


# --------------------------------------------------------------------------------------------
# AttributeIndex
# --------------------------------------------------------------------------------------------


class Attribute(NamedTuple):
    """One distinct attribute: the first spelling seen, its key and its insertion position."""

    text: str
    key: str
    ordinal: int


class AttributeIndex:
    """The distinct attributes of one exploration, in the order they were found.

    Not thread-safe; one index per exploration, fed from one event loop.

    Args:
        threshold: score (0-100, ``fuzz.ratio``'s scale, a swap counting one edit) from which
            two keys one typo apart are near duplicates (see the module docstring); ``None``
            or ``100`` compares keys exactly (no fuzzy step, no accent folding, less memory).

    Example:
        >>> index = AttributeIndex()
        >>> [a.text for a in map(index.add, ["Eiffel Tower", "the Eiffel towers", "Eifel Tower"])
        ...  if a]
        ['Eiffel Tower']
        >>> len(index), index.duplicates, index.near_duplicates
        (1, 2, 1)
    """

    def __init__(self, threshold: float | None = DEFAULT_THRESHOLD) -> None:
        if threshold is not None and not 0 < threshold <= 100:
            raise ValueError(f"threshold must be in (0, 100] or None, got {threshold!r}")
        self._threshold = threshold
        self._fuzzy = threshold is not None and threshold < 100
        if threshold is not None and self._fuzzy:
            # ratio >= threshold allows an indel distance of slack * (len(a) + len(b)); a key
            # shorter than min_len cannot afford even one edit against any other key.
            slack = (100.0 - threshold) / 100.0
            self._min_len = max(2, math.ceil((1 - slack) / (2 * slack) - 1e-9))
        else:
            self._min_len = 1 << 62
        self._items: list[Attribute] = []
        self._by_key: dict[str, Attribute] = {}
        self._by_squashed: dict[str, Attribute] = {}
        #: key of several words without accents -> attribute (near duplicates only)
        self._by_folded: dict[str, Attribute] = {}
        #: signature hash -> the key, or keys, filed under it (the key objects are shared)
        self._buckets: dict[int, str | list[str]] = {}
        #: Inputs rejected as duplicates (exact, squashed or near).
        self.duplicates = 0
        #: The part of ``duplicates`` found by the fuzzy comparison.
        self.near_duplicates = 0
        #: Inputs without any letter or digit (nothing to add).
        self.rejected = 0

    @property
    def threshold(self) -> float | None:
        """The near-duplicate score, or ``None`` when only exact keys are compared."""
        return self._threshold

    # -- public API ------------------------------------------------------------------------

    def add(self, text: str) -> Attribute | None:
        """Add one attribute unless it is already known.

        Returns:
            The new ``Attribute`` (keeping this spelling, whitespace collapsed), or ``None``
            when ``text`` duplicates a known attribute (counted in ``duplicates``) or has no
            letter or digit (counted in ``rejected``).
        """
        words = _words(text)
        if not words:
            self.rejected += 1
            return None
        stems = [_STEMS.get(w) or _stem(w) for w in words]
        key = " ".join(stems)
        squashed = _squash(words, stems)
        if key in self._by_key or squashed in self._by_squashed:
            self.duplicates += 1
            return None
        folded = signatures = None
        if self._fuzzy:
            folded, folded_stems = _fold_key(key, stems)
            if len(stems) > 1 and folded in self._by_folded:  # "Sacre-Coeur" / "Sacré-Cœur"
                self.duplicates += 1
                self.near_duplicates += 1
                return None
            if len(folded) >= max(self._min_len, 0 if len(stems) > 1 else _MIN_ALONE):
                signatures = _signatures(folded_stems)
                if self._near(folded, folded_stems, signatures) is not None:
                    self.duplicates += 1
                    self.near_duplicates += 1
                    return None
        attribute = Attribute(" ".join(text.split()), key, len(self._items))
        self._items.append(attribute)
        self._by_key[key] = attribute
        if squashed not in self._by_squashed:
            self._by_squashed[squashed] = attribute
        if folded is not None:
            self._by_folded.setdefault(folded, attribute)
        if signatures:
            file = self._buckets.setdefault
            for signature in signatures:
                held = file(signature, folded)  # type: ignore[arg-type]
                if held is folded:
                    continue
                if held.__class__ is str:
                    self._buckets[signature] = [held, folded]  # type: ignore[list-item]
                elif len(held) < MAX_BUCKET and held[-1] is not folded:
                    held.append(folded)  # type: ignore[union-attr, arg-type]
        return attribute

    def lookup(self, text: str) -> Attribute | None:
        """The known attribute that ``text`` duplicates, or ``None`` (nothing is added)."""
        words = _words(text)
        if not words:
            return None
        stems = [_STEMS.get(w) or _stem(w) for w in words]
        key = " ".join(stems)
        squashed = _squash(words, stems)
        found = self._by_key.get(key) or self._by_squashed.get(squashed)
        if found is None and self._fuzzy:
            folded, folded_stems = _fold_key(key, stems)
            if len(stems) > 1:
                found = self._by_folded.get(folded)
            if found is None and len(folded) >= max(
                self._min_len, 0 if len(stems) > 1 else _MIN_ALONE
            ):
                found = self._near(folded, folded_stems, _signatures(folded_stems))
        return found

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.lookup(text) is not None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self._items)

    def items(self) -> list[Attribute]:
        """Every attribute, in insertion order (a copy)."""
        return list(self._items)

    def texts(self) -> list[str]:
        """The display strings, in insertion order."""
        return [a.text for a in self._items]

    def extend(self, texts: Iterable[str]) -> list[Attribute]:
        """Add several attributes; returns the new ones."""
        return [a for a in map(self.add, texts) if a is not None]

    def recent(self, k: int) -> list[str]:
        """The ``k`` most recently added display strings, oldest first."""
        return [a.text for a in self._items[-k:]] if k > 0 else []

    def sample(self, k: int, rng: random.Random | None = None) -> list[str]:
        """Up to ``k`` display strings drawn at random, in insertion order."""
        if k <= 0:
            return []
        if k >= len(self._items):
            return self.texts()
        picked = (rng or random.Random()).sample(range(len(self._items)), k)
        return [self._items[i].text for i in sorted(picked)]

    def prompt_sample(
        self, max_items: int = 60, *, rng: random.Random | None = None, max_chars: int = 3000
    ) -> list[str]:
        """A bounded "already known" list for the next prompt.

        Everything when it fits; otherwise the ``max_items // 2`` most recent attributes (what
        the models produce now) and the rest drawn from the older ones, in insertion order,
        cut to ``max_chars`` characters in total (counting two for each separator).
        """
        if max_items <= 0:
            return []
        if len(self._items) <= max_items:
            chosen = self._items
        else:
            n_recent = max_items // 2
            older = len(self._items) - n_recent
            picked = (rng or random.Random()).sample(range(older), max_items - n_recent)
            chosen = [self._items[i] for i in sorted(picked)] + self._items[older:]
        out: list[str] = []
        budget = max_chars
        for attribute in chosen:
            budget -= len(attribute.text) + 2
            if budget < 0:
                break
            out.append(attribute.text)
        return out

    # -- near duplicates -------------------------------------------------------------------

    def _near(self, key: str, words: list[str], signatures: list[int]) -> Attribute | None:
        """The known folded key that ``key`` is one typo away from (``_typo_cost``) with the
        best score of at least ``threshold``, among the blocking candidates."""
        get = self._buckets.get
        candidates: list[str] = []
        for signature in signatures:
            held = get(signature)
            if held is not None:
                if held.__class__ is str:
                    candidates.append(held)  # type: ignore[arg-type]
                else:
                    candidates.extend(held)
        if not candidates:
            return None
        del candidates[MAX_CANDIDATES:]
        threshold = self._threshold or 100.0
        # fuzz.ratio counts a swap of two letters as two edits, the score below as one.
        cutoff = max(0.0, 100.0 - 2 * (100.0 - threshold))
        for candidate, _, _ in process.extract(
            key, candidates, scorer=fuzz.ratio, score_cutoff=cutoff, limit=None
        ):
            cost = _typo_cost(words, candidate.split(" "))
            if cost is not None and _score(cost, key, candidate) >= threshold:
                return self._by_folded[candidate]
        return None


def _score(cost: int, a: str, b: str) -> float:
    """``fuzz.ratio``'s scale (100 x (1 - edits / total length)) for ``cost`` edits."""
    return 100.0 * (1.0 - cost / (len(a) + len(b)))


def _squash(words: list[str], stems: list[str]) -> str:
    """The key without spaces: "Notre Dame", "Notre-Dame" and "Notredame" share it.

    The words joined, with the last one stemmed, which is what stemming the joined word gives.
    """
    if len(stems) == 1:
        return stems[0]
    return "".join(words[:-1]) + stems[-1]


#: Fewest letters of a one-word name that a typo may be found in (see ``_is_typo``).
_MIN_ALONE = 8

# Latin letters that NFKD does not split into a base letter and a mark.
_LATIN_LETTERS = str.maketrans(
    {"œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)


def _fold_word(word: str) -> str:
    """``word`` without the accents of its Latin letters ("élysée" -> "elysee", "cœur" ->
    "coeur"); marks of other scripts stay (they are letters there: "ガ" is not "カ")."""
    if word.isascii():
        return word
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", word.translate(_LATIN_LETTERS)):
        if out and unicodedata.combining(char) and out[-1].isascii():
            continue
        out.append(char)
    return unicodedata.normalize("NFC", "".join(out))


def _fold_key(key: str, stems: list[str]) -> tuple[str, list[str]]:
    """The key and its words without accents; the same objects for an ASCII key or a key of
    one word (alone, an accent may make another word: "Café" / "Cafe", "Año" / "Ano")."""
    if key.isascii() or len(stems) == 1:
        return key, stems
    folded = [_fold_word(s) for s in stems]
    return " ".join(folded), folded


def _signatures(stems: list[str]) -> list[int]:
    """The blocking signatures of a key (see the module docstring).

    One word: the word and each variant with one letter (not the first) deleted; a known word
    and a new one within one edit after the first letter share one of these. Several words:
    for each word of three or more letters, all the words with that one cut to its first
    letter: keys that differ by a typo in one word (same initial, see ``_is_typo``) share it.
    """
    if len(stems) == 1:
        word = stems[0]
        return [hash(word), *[hash(word[:i] + word[i + 1 :]) for i in range(1, len(word))]]
    signatures = []
    tokens = list(stems)
    for i, token in enumerate(stems):
        if len(token) > 2:
            tokens[i] = token[0]
            signatures.append(hash(tuple(tokens)))
            tokens[i] = token
    return signatures


def _typo_cost(a: list[str], b: list[str]) -> int | None:
    """The edits between two keys that are the same words but one, when that one is a typo of
    the other (``_is_typo``); ``None`` otherwise. Numbers never differ ("Apollo 1" is not
    "Apollo 11"); keys equal without accents cost nothing."""
    if len(a) != len(b):
        return None
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(differ) != 1:
        return None if differ else 0
    x, y = a[differ[0]], b[differ[0]]
    if not (x.isalpha() and y.isalpha()):
        return None
    return _is_typo(x, y, alone=len(a) == 1)


def _is_typo(a: str, b: str, *, alone: bool = False) -> int | None:
    """The edits (a swap counts one) between two different words that are one slip of the
    keyboard apart, or ``None`` when they are two words.

    A one-letter change is a different word more often than a typo ("Desert" / "Dessert",
    "Marie" / "Maria", "Ville" / "Villa", "Bologna" / "Bologne"), so only these count, inside
    the word (same first and last letter: endings carry gender, number and language):

    * a doubled letter written once, or a letter doubled ("Eiffel" / "Eifel"; 4+ letters);
    * one other letter left out or added ("Luxembourg" / "Luxemburg"; 6+ letters);
    * two neighbours swapped ("Museum" / "Musuem"; 5+ letters);
    * one letter changed before the last three ("Triomphe" / "Triumphe"; 7+ letters), so
      that suffixes such as -ary/-ery, -ant/-ent stay apart;
    * the British and American "-tre" / "-ter" ("Centre" / "Center"; 5+ letters; not
      "-bre": "Timbre" / "Timber").

    A word that is the whole name (``alone``) has no other word to confirm the slip: it must
    have 8 or more letters, a changed letter never counts ("Complement" / "Compliment"), nor
    does a consonant doubled before -ing or -ed ("Scrapping" / "Scraping").
    """
    la, lb = len(a), len(b)
    if la == lb and la >= 5 and a[:-3] == b[:-3] and {a[-3:], b[-3:]} == {"tre", "ter"}:
        return None if alone else 1
    if a[0] != b[0] or a[-1] != b[-1]:
        return None
    if alone and min(la, lb) < _MIN_ALONE:
        return None
    if la == lb:
        if la < 5:
            return None
        differ = [i for i in range(1, la - 1) if a[i] != b[i]]
        if len(differ) == 2:
            i, j = differ
            return 1 if j == i + 1 and a[i] == b[j] and a[j] == b[i] else None
        if not alone and len(differ) == 1 and la >= 7 and differ[0] < la - 3:
            return 2
        return None
    if abs(la - lb) != 1:
        return None
    short, long = (a, b) if la < lb else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    if long[:i] + long[i + 1 :] != short:
        return None
    doubled = long[i] == long[i - 1] or (i + 1 < len(long) and long[i] == long[i + 1])
    if doubled and alone and long.endswith(("ing", "ed", "ings")):
        return None
    return 1 if len(short) >= (4 if doubled else 6) else None
