"""How fast AttributeIndex.add is with 100,000 known attributes (target: < 20 µs per add),
and how right it is on the labelled pairs of tests/data/dedup_pairs.tsv.

Plain script, no pytest: ``.venv/bin/python bench/dedup_bench.py [--known 100000] [--seed 7]``.

It builds ``--known`` distinct, realistic attributes from seeded word lists ("Valdoran
Bridge", "Quiet Harbour of Melisande", ...), then times batches of adds against that index:
new attributes, exact duplicates in another spelling (case, article, plural, punctuation) and
near duplicates (one letter dropped or doubled), and prints µs per add and the ratio to the
target. Attributes are generated before the clock starts, so the figures are the adds and the
loop around them. CPU time is the figure to compare with the target: wall time also counts
the time other processes hold the machine's two cores. On this kind of VM the same run can be
up to ~1.6x slower from one minute to the next; run it a few times.

Then it scores the rule on the labelled pairs (typos, plurals, articles, accents, look-alike
words, sub-parts, synonyms): precision and recall of the merges, per kind, and the pairs it
gets wrong. ``--pairs-only`` skips the timing. ``--semantic`` adds what semantic dedup
(tasks/semantic.py, through litellm's ``aembedding``) merges on top of the strings, at a few
thresholds: with ``--embedding-model provider:model`` a real model (its key and base-URL
variables as for explore), otherwise the local test server's deterministic letter-trigram
embedding (it knows spelling, not meaning: a floor for what a real model adds).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.attributes import AttributeIndex, normalise  # noqa: E402
from tests.support.dedup_pairs import STRING_KINDS, Pair, load_pairs, score  # noqa: E402

TARGET_US = 20.0


def _word_list(text: str) -> list[str]:
    return text.split()


ADJECTIVES = _word_list("""
ancient quiet grand royal hidden old new golden silver crimson little great
northern southern eastern western upper lower sacred lost winding sunken floating painted
marble iron glass stone wooden emerald azure scarlet misty windy sunny shady secret famous
modern gothic baroque roman medieval imperial public private botanical national municipal
historic covered open narrow broad twin lonely crystal velvet copper bronze amber ivory
shadow moonlit starry frozen burning silent whispering singing dancing""")

NOUNS = _word_list("""
tower museum garden bridge cathedral market square palace park fountain gallery
library theatre opera church chapel abbey castle fortress harbour pier lighthouse canal
avenue boulevard street alley passage arcade station cemetery monument statue column arch
gate wall island beach cliff valley hill mountain lake river waterfall forest meadow
vineyard orchard farm mill bakery cafe bistro brasserie tavern inn hotel hostel school
university observatory planetarium aquarium zoo stadium arena circus cinema concert hall
courtyard cloister crypt catacomb tunnel mine quarry workshop studio atelier boutique shop
bazaar pavilion terrace balcony rooftop greenhouse conservatory promenade embankment quay
dock marina bay cove lagoon spring well pond glade grove""")

SYLLABLES = _word_list("""val dor an mel is ande cor vin tha ren bel mar lo su ki ra pen dal fen gor
wen ly sa mo ri tu ha ne zo qua el ar om ur ith ost elm bri cas""")


def _name(rng: random.Random) -> str:
    parts = rng.choice((2, 2, 3, 3, 4))
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def attributes(rng: random.Random) -> Iterator[str]:
    """An endless stream of plausible attributes (a few repeat; the index drops those)."""
    patterns: list[Callable[[], str]] = [
        lambda: f"{_name(rng)} {rng.choice(NOUNS).capitalize()}",
        lambda: f"{rng.choice(ADJECTIVES).capitalize()} {rng.choice(NOUNS)}",
        lambda: f"{rng.choice(ADJECTIVES).capitalize()} {rng.choice(NOUNS)} of {_name(rng)}",
        lambda: _name(rng) + rng.choice(("", "ia", "ville", "berg", "ton")),
        lambda: f"{_name(rng)} {_name(rng)} {rng.choice(NOUNS).capitalize()}",
        lambda: f"The {rng.choice(ADJECTIVES).capitalize()} {_name(rng)} {rng.choice(NOUNS)}",
        lambda: f"{rng.choice(NOUNS).capitalize()} of the {rng.choice(ADJECTIVES)} {_name(rng)}",
    ]
    weights = [30, 4, 20, 10, 12, 12, 12]
    while True:
        yield rng.choices(patterns, weights)[0]()


def respell(text: str, rng: random.Random) -> str:
    """The same attribute written differently (same normalised key)."""
    variant = rng.randrange(5)
    if variant == 0:
        return text.upper()
    if variant == 4 and text[-1] not in "siu":  # "-is"/"-us" words keep their "s"
        return text + "s"  # plural
    if variant == 1:
        return "the " + text.lower().removeprefix("the ")
    if variant == 2:
        return text.replace(" ", "-") + "!"
    return f"**{text}**"


def typo(text: str, rng: random.Random) -> str:
    """One letter dropped or doubled inside a word of five or more letters."""
    words = text.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 5]
    i = rng.choice(long_words)
    word = words[i]
    j = rng.randrange(1, len(word) - 1)
    words[i] = word[:j] + word[j + 1 :] if rng.random() < 0.5 else word[:j] + word[j] + word[j:]
    return " ".join(words)


def timed(index: AttributeIndex, texts: list[str], rounds: int) -> tuple[float, float, int]:
    """Median CPU and wall µs per add over ``rounds`` equal chunks, and how many were added.

    CPU time (``time.process_time``) is the figure to trust on a shared machine: wall time
    also counts the time other processes hold the two cores.
    """
    add = index.add
    size = len(texts) // rounds
    cpu, wall, added = [], [], 0
    for r in range(rounds):
        chunk = texts[r * size : (r + 1) * size]
        start_cpu, start_wall = time.process_time_ns(), time.perf_counter_ns()
        added += sum(add(t) is not None for t in chunk)
        cpu.append((time.process_time_ns() - start_cpu) / 1000 / len(chunk))
        wall.append((time.perf_counter_ns() - start_wall) / 1000 / len(chunk))
    return statistics.median(cpu), statistics.median(wall), added


def string_rule(threshold: float) -> Callable[[Pair], bool]:
    def merges(pair: Pair) -> bool:
        index = AttributeIndex(threshold=threshold)
        index.add(pair.a)
        return index.add(pair.b) is None

    return merges


def report_pairs(threshold: float) -> None:
    """Precision and recall of the string rule on the labelled pairs."""
    pairs = load_pairs()
    merges = string_rule(threshold)
    kinds = sorted({p.kind for p in pairs})
    print(f"\nLabelled pairs ({len(pairs)}; tests/data/dedup_pairs.tsv), threshold {threshold}:")
    print(f"{'kind':<14}{'pairs':>6}{'same':>6}{'merged':>8}{'right':>7}")
    for kind in kinds:
        of_kind = [p for p in pairs if p.kind == kind]
        merged = [merges(p) for p in of_kind]
        right = sum(m == p.same for m, p in zip(merged, of_kind, strict=True))
        same = sum(p.same for p in of_kind)
        print(f"{kind:<14}{len(of_kind):>6}{same:>6}{sum(merged):>8}{right:>7}")
    strings = score([p for p in pairs if p.kind in STRING_KINDS or not p.same], merges)
    overall = score(pairs, merges)
    print(
        f"precision {strings.precision:.3f} ({len(strings.false_merges)} false merges); "
        f"recall {strings.recall:.3f} of the {strings.duplicates} duplicates a string rule can "
        f"see, {overall.recall:.3f} of all {overall.duplicates} (synonyms included)"
    )
    for pair in strings.false_merges:
        print(f"  false merge: {pair.a!r} / {pair.b!r} ({pair.kind})")
    for pair in strings.misses:
        print(f"  missed: {pair.a!r} / {pair.b!r} ({pair.kind})")


def report_semantic(model: str | None, thresholds: list[float]) -> None:
    """What semantic dedup adds to the string rule on the labelled pairs."""
    import asyncio
    import os

    from tasks.semantic import SemanticIndex, embedder
    from tests.support.llm_server import LLMServer

    pairs = load_pairs()
    strings = string_rule(92.0)
    left = [p for p in pairs if not strings(p)]  # what the strings did not merge

    async def similarities(embed) -> list[float]:
        index = SemanticIndex(embed, threshold=1e-9)
        await index.add_known([t for p in left for t in (p.a, p.b)])
        return [index.similarity(p.a, p.b) for p in left]

    with LLMServer() as server:
        if model is None:
            os.environ["OPENAI_BASE_URL"] = server.base_url
            os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
        scores = asyncio.run(similarities(embedder(model or "openai:trigram")))
    print(
        f"\nSemantic dedup on the {len(left)} pairs the strings left apart "
        f"({model or 'test server trigram embedding'}):"
    )
    print(f"{'threshold':>9}{'merged':>8}{'right':>7}{'wrong':>7}  examples")
    for threshold in thresholds:
        merged = [(p, s) for p, s in zip(left, scores, strict=True) if s >= threshold]
        right = [p for p, _ in merged if p.same]
        wrong = [p for p, _ in merged if not p.same]
        shown = ", ".join(f"{p.a}/{p.b}" for p in (right[:2] + wrong[:2]))
        print(f"{threshold:>9.2f}{len(merged):>8}{len(right):>7}{len(wrong):>7}  {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--known", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=92.0)
    parser.add_argument("--pairs-only", action="store_true", help="Skip the timing.")
    parser.add_argument("--semantic", action="store_true", help="Add semantic dedup.")
    parser.add_argument("--embedding-model", default=None, help="provider:model")
    parser.add_argument("--semantic-thresholds", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    args = parser.parse_args()
    if args.pairs_only:
        report_pairs(args.threshold)
        if args.semantic:
            report_semantic(args.embedding_model, args.semantic_thresholds)
        return

    rng = random.Random(args.seed)
    stream = attributes(rng)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index = AttributeIndex(threshold=args.threshold)
    offered = 0
    fill_cpu_ns = fill_wall_ns = 0
    while len(index) < args.known:
        # Generated ahead of the clock, so the figures count adds only.
        pool = [next(stream) for _ in range(max(1000, (args.known - len(index)) * 21 // 20))]
        start_cpu, start_wall = time.process_time_ns(), time.perf_counter_ns()
        for text in pool:
            if len(index) >= args.known:
                break
            index.add(text)
            offered += 1
        fill_cpu_ns += time.process_time_ns() - start_cpu
        fill_wall_ns += time.perf_counter_ns() - start_wall
    fill_cpu = fill_cpu_ns / 1000 / offered
    fill_wall = fill_wall_ns / 1000 / offered
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    known = index.texts()
    fresh: list[str] = []
    while len(fresh) < args.batch:
        text = next(stream)
        if text not in index and text not in fresh[-50:]:
            fresh.append(text)
    respelled = [respell(rng.choice(known), rng) for _ in range(args.batch)]
    # Near duplicates the threshold allows: keys of 14+ characters, not exact after the typo.
    typos: list[str] = []
    while len(typos) < args.batch:
        original = rng.choice(known)
        if len(normalise(original)) < 14 or not any(len(w) >= 5 for w in original.split()):
            continue
        variant = typo(original, rng)
        if normalise(variant) != normalise(original):
            typos.append(variant)

    rows = [(f"fill 0 -> {args.known:,} (mixed)", offered, fill_cpu, fill_wall, len(index))]
    for label, batch in (
        ("new attributes", fresh),
        ("exact dup, respelled", respelled),
        ("near dup, one-letter typo", typos),
    ):
        before = len(index)
        cpu, wall, added = timed(index, batch, args.rounds)
        rows.append((label, len(batch), cpu, wall, added))
        assert len(index) == before + added

    print(
        f"AttributeIndex(threshold={args.threshold}): {args.known:,} known before the batches, "
        f"{len(index):,} after; RSS growth while filling ≈ {rss_mb:.0f} MB"
    )
    header = f"{'case':<28}{'adds':>8}{'CPU µs':>9}{'/target':>9}{'wall µs':>9}{'added':>8}"
    print(header)
    print("-" * len(header))
    for label, n, cpu, wall, added in rows:
        print(f"{label:<28}{n:>8,}{cpu:>9.2f}{cpu / TARGET_US:>9.2f}{wall:>9.2f}{added:>8,}")
    caught = 1 - rows[-1][4] / rows[-1][1]
    print(
        f"median of {args.rounds} chunks per batch; target {TARGET_US:.0f} µs per add; "
        f"near duplicates caught: {caught:.1%}"
    )
    report_pairs(args.threshold)
    if args.semantic:
        report_semantic(args.embedding_model, args.semantic_thresholds)


if __name__ == "__main__":
    main()
