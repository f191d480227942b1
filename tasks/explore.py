"""Prefect-free core of topic exploration: the prompt, the shared state, the output files.

The orchestrator owns one ``Exploration``: every producer's answer goes through
``Exploration.accept``, which deduplicates it against everything found so far (all producers,
earlier runs included), updates the metrics and appends the new attributes to a journal.

Files in the topic folder:

``attributes.jsonl``
    The journal: one line per new attribute, appended and flushed per accepted batch. It is
    the source of truth a rerun continues from.
``.llm-conductor/lock``
    Held by the run that writes the folder (``explore_lock``): a second run on the same
    topic folder is refused at once, with the holder's pid, host and start time.
``output.txt`` / ``output.json`` / ``metadata.json``
    Snapshots written atomically (temp file + rename), at most every ``SNAPSHOT_INTERVAL``
    seconds while the run goes and once more at the end, so they are always valid files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slugify import slugify

from blocks.errors import UsageError
from blocks.result import Completion
from tasks.attributes import MAX_WORDS, AttributeIndex, reject_reason
from tasks.manifest import BatchLock
from tasks.outputs import write_atomic
from tasks.semantic import DEFAULT_SEMANTIC_THRESHOLD, SemanticIndex

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "SNAPSHOT_INTERVAL",
    "Exploration",
    "ExploreSettings",
    "build_prompt",
    "default_output_dir",
    "explore_lock",
    "prompt_echoes",
]

SNAPSHOT_INTERVAL = 2.0
JOURNAL = "attributes.jsonl"
#: Facets rotated per producer and request, so concurrent producers ask different questions.
FACETS = (
    "well-known",
    "lesser-known",
    "historical",
    "contemporary",
    "practical",
    "surprising",
    "regional or local",
    "technical or specialist",
)
PER_REQUEST = 10
#: Completion tokens per request: a list of PER_REQUEST short lines (about 12 tokens each, a
#: preamble) fits, and a model that rambles on after it is cut early; the cut list is parsed
#: as it is, its unfinished last line dropped (never continued).
DEFAULT_MAX_TOKENS = 15 * PER_REQUEST


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_output_dir(topic: str) -> Path:
    """``./output/<topic-slug>``; the slug has only ``a-z0-9-``, so it cannot escape."""
    slug = slugify(topic, max_length=80)
    if not slug:
        raise UsageError(f"topic {topic!r} has no letters or digits to name its folder")
    return Path("output") / slug


#: Topic folders this run holds (the CLI locks before Prefect starts, the flow again).
_HELD: ContextVar[frozenset[Path]] = ContextVar("explore_locks_held", default=frozenset())


@contextlib.contextmanager
def explore_lock(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir`` for this run, as batch holds its output dir (``BatchLock``).

    Taken again inside the same run (the flow, after the CLI took it before starting
    Prefect), it is already held and passes.

    Raises:
        UsageError: another run holds the folder (names its pid, host and start time), or the
            folder cannot be created.
    """
    key = output_dir.resolve()
    held = _HELD.get()
    if key in held:
        yield
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {output_dir}: {error.strerror}") from None
    with BatchLock(
        output_dir,
        purpose="topic folder {dir} is in use by another explore run",
        hint="wait for it to finish or stop it, or choose another --output",
    ):
        token = _HELD.set(held | {key})
        try:
            yield
        finally:
            _HELD.reset(token)


def build_prompt(
    topic: str, known: list[str], total_known: int, producer: int, request: int
) -> str:
    """The request to one model: new attributes of ``topic``, with a bounded view of the known.

    ``known`` is a sample (recent plus random older ones, see ``AttributeIndex.prompt_sample``)
    so the prompt stays the same size however large the set grows.
    """
    facet = FACETS[(producer + request) % len(FACETS)]
    lines = [
        f"Topic: {topic}",
        f"List {PER_REQUEST} distinct attributes of this topic, favouring {facet} ones.",
        "Reply with a numbered list, one short attribute per line, nothing else.",
    ]
    if known:
        shown = f"showing {len(known)}" if len(known) < total_known else "all"
        lines += [
            f"Do not repeat any of these already known ones ({total_known} so far, {shown}):",
            *(f"- {item}" for item in known),
        ]
    return "\n".join(lines)


def prompt_echoes(prompt: str, topic: str) -> list[str]:
    """What of ``prompt`` a model may repeat as if it were an attribute: its instruction lines
    (not the known attributes it lists) and the topic."""
    return [line for line in prompt.splitlines() if not line.startswith("- ")] + [topic]


@dataclass
class Stats:
    requests: int = 0
    failures: int = 0
    items: int = 0
    unique: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    errors: dict[str, int] = field(default_factory=dict)
    crashed: str | None = None

    def record(self, completion: Completion, items: int, unique: int) -> None:
        self.requests += 1
        self.items += items
        self.unique += unique
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        if completion.cost is None:
            self.cost_known = False
        else:
            self.cost += completion.cost

    def fail(self, error: BaseException) -> None:
        self.requests += 1
        self.failures += 1
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data["yield"] = round(self.unique / self.requests, 3) if self.requests else 0.0
        if data["crashed"] is None:
            del data["crashed"]
        return data


@dataclass(frozen=True)
class ExploreSettings:
    topic: str
    producers: int = 5
    iterations: int | None = None
    max_requests: int | None = None
    routing_strategy: str = "backoff"
    routing_config: str = "random:random"
    similarity: float | None = 92.0
    seed: int | None = None
    #: Completion tokens per request (None: the provider's own, e.g. OPENAI_MAX_TOKENS).
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    #: Lines of more words are prose, not attributes.
    max_words: int = MAX_WORDS
    #: Embeddings model ("provider:model") for semantic dedup; None = off.
    semantic_model: str | None = None
    #: Cosine similarity from which two attributes are one (semantic dedup).
    semantic_threshold: float = DEFAULT_SEMANTIC_THRESHOLD

    def check(self) -> None:
        if not self.topic.strip():
            raise UsageError("--topic is empty")
        if self.producers < 1:
            raise UsageError(f"--producers must be at least 1, got {self.producers}")
        for name in ("iterations", "max_requests", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be at least 1, got {value}")
        if self.max_words < 1:
            raise UsageError(f"--max-words must be at least 1, got {self.max_words}")
        if not 0 < self.semantic_threshold <= 1:
            raise UsageError(
                f"--semantic-threshold must be in (0, 1], got {self.semantic_threshold}"
            )
        if self.similarity is not None and not 0 < self.similarity <= 100:
            raise UsageError(f"--similarity must be in (0, 100], got {self.similarity}")


class Exploration:
    """The single set of known attributes, the metrics and the output files of one topic."""

    def __init__(self, settings: ExploreSettings, output_dir: Path) -> None:
        self.settings = settings
        self.output_dir = output_dir
        self.index = AttributeIndex(settings.similarity)
        self.records: list[dict[str, Any]] = []
        self.providers: dict[str, Stats] = {}
        self.producers: dict[int, Stats] = {}
        self.total_items = 0
        #: Lines of the answers that were not attributes, by reason (see ``parse_answer``).
        self.rejected: dict[str, int] = {}
        #: Semantic dedup (``settings.semantic_model``), set up by the orchestrator.
        self.semantic: SemanticIndex | None = None
        self.semantic_lock = asyncio.Lock()  # one answer at a time against the known
        #: Items dropped because they mean the same as a known attribute.
        self.semantic_duplicates = 0
        self.accepted = 0
        self.reserved = 0
        self.stopped = False  # Ctrl-C: no new request, whatever the iterations left
        self.batches: list[dict[str, Any]] = []  # per accepted batch: time, new, duplicates
        self.started = _now()
        self.resumed_from = 0
        self._clock_start = time.monotonic()
        self._last_snapshot = 0.0
        self._journal: Any = None
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: ExploreSettings, output_dir: Path, *, fresh: bool) -> Exploration:
        """Continue the topic folder's previous run, or start over (``fresh``) after moving
        the old files into ``previous-<timestamp>/`` (nothing is deleted)."""
        settings.check()
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(
                f"cannot create output folder {output_dir}: {error.strerror}"
            ) from None
        exploration = cls(settings, output_dir)
        metadata = output_dir / "metadata.json"
        if metadata.exists() and not fresh:
            topic = _read_json(metadata).get("topic")
            if topic is not None and topic != settings.topic:
                raise UsageError(
                    f"{output_dir} holds the topic {topic!r}, not {settings.topic!r}: "
                    "choose another --output, or --fresh to start over (old files are kept)"
                )
        if fresh:
            exploration._set_aside()
        else:
            exploration._load()
        exploration._journal = (output_dir / JOURNAL).open("a", encoding="utf-8")
        if _torn(output_dir / JOURNAL):
            # A killed run's last line is cut: the next record must not be glued to it.
            exploration._journal.write("\n")
        return exploration

    def _set_aside(self) -> None:
        names = [JOURNAL, "output.txt", "output.json", "metadata.json"]
        present = [n for n in names if (self.output_dir / n).exists()]
        if not present:
            return
        backup = self.output_dir / f"previous-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        backup.mkdir(exist_ok=True)
        for name in present:
            (self.output_dir / name).rename(backup / name)

    def _load(self) -> None:
        journal = self.output_dir / JOURNAL
        records: Iterable[dict[str, Any]] = []
        if journal.exists():
            records = _read_jsonl(journal)
        elif (self.output_dir / "output.json").exists():
            records = _read_json(self.output_dir / "output.json").get("attributes", [])
        echoes = prompt_echoes(build_prompt(self.settings.topic, [], 0, 0, 0), self.settings.topic)
        for record in records:
            valid = isinstance(record, dict) and isinstance(record.get("attribute"), str)
            if not valid:
                continue
            # Junk an older run kept must not be shown to the model as "already known".
            reason = reject_reason(
                record["attribute"], max_words=self.settings.max_words, echoes=echoes
            )
            if reason is not None:
                self.note_rejected({reason: 1})
            elif self.index.add(record["attribute"]) is not None:
                self.records.append(record)
        self.resumed_from = len(self.records)
        self.index.duplicates = self.index.near_duplicates = 0
        previous = _read_json(self.output_dir / "metadata.json")
        self.started = previous.get("started", self.started)

    # -- the run ---------------------------------------------------------------------------

    def reserve(self) -> bool:
        """Claim one of ``--iterations`` before a request; False once they are all claimed
        or the run is stopping."""
        limit = self.settings.iterations
        if self.stopped or (limit is not None and self.reserved >= limit):
            return False
        self.reserved += 1
        return True

    def release(self) -> None:
        """Give a claimed iteration back (the request failed)."""
        self.reserved -= 1

    @property
    def finished(self) -> bool:
        limit = self.settings.iterations
        return limit is not None and self.accepted >= limit

    def known_sample(self, producer: int, request: int) -> list[str]:
        rng = random.Random(hash((self.settings.seed, producer, request)))
        return self.index.prompt_sample(rng=rng)

    def note_rejected(self, rejected: dict[str, int]) -> None:
        """Count the lines of an answer that were not attributes (``ParsedAnswer.rejected``)."""
        for reason, count in rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    def accept(
        self,
        items: list[str],
        completion: Completion,
        route: str,
        producer: int,
        same_meaning: Collection[str] = (),
    ) -> list[str]:
        """Deduplicate one answer against everything known; returns the new attributes.

        ``same_meaning``: items that semantic dedup found to repeat a known attribute.
        """
        timestamp = _now()
        new: list[str] = []
        for item in items:
            if item in same_meaning:
                self.semantic_duplicates += 1
                continue
            attribute = self.index.add(item)
            if attribute is None:
                continue
            new.append(attribute.text)
            self.records.append(
                {
                    "attribute": attribute.text,
                    "provider": completion.provider,
                    "model": completion.model,
                    "producer": producer,
                    "timestamp": timestamp,
                }
            )
        self.total_items += len(items)
        self.accepted += 1
        self.providers.setdefault(route, Stats()).record(completion, len(items), len(new))
        self.producers.setdefault(producer, Stats()).record(completion, len(items), len(new))
        self.batches.append(
            {"t": round(self.elapsed, 2), "new": len(new), "items": len(items), "route": route}
        )
        if new:
            lines = (json.dumps(r, ensure_ascii=False) for r in self.records[-len(new) :])
            self._journal.write("".join(f"{line}\n" for line in lines))
            self._journal.flush()
        self.emit(
            "batch",
            {
                "producer": producer,
                "route": route,
                "new": new,
                "items": len(items),
                "metrics": self.metrics(),
            },
        )
        self.maybe_snapshot()
        return new

    def fail(self, route: str | None, producer: int, error: BaseException) -> None:
        if route is not None:
            self.providers.setdefault(route, Stats()).fail(error)
        self.producers.setdefault(producer, Stats()).fail(error)
        status = getattr(error, "status_code", None)  # the page shows e.g. "HTTP 401"
        self.emit(
            "error", {"producer": producer, "route": route, "error": str(error), "status": status}
        )

    def crashed(self, producer: int, error: BaseException) -> None:
        self.producers.setdefault(producer, Stats()).crashed = f"{type(error).__name__}: {error}"
        self.emit("producer-crashed", {"producer": producer, "error": str(error)})

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(kind, data)

    # -- metrics and files -----------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._clock_start

    def metrics(self) -> dict[str, Any]:
        stats = list(self.providers.values())
        minutes = max(self.elapsed / 60, 1e-9)
        found = len(self.records) - self.resumed_from
        duplicates = self.total_items - found
        return {
            "unique": len(self.records),
            "new_this_run": found,
            "total_items": self.total_items,
            "duplicates": duplicates,
            "near_duplicates": self.index.near_duplicates,
            "semantic_duplicates": self.semantic_duplicates,
            "duplicate_rate": round(duplicates / self.total_items, 4) if self.total_items else 0.0,
            "unique_per_minute": round(found / minutes, 2),
            "batches": self.accepted,
            "requests": sum(s.requests for s in stats),
            "failures": sum(s.failures for s in stats),
            "prompt_tokens": sum(s.prompt_tokens for s in stats),
            "completion_tokens": sum(s.completion_tokens for s in stats),
            "cost": round(sum(s.cost for s in stats), 6),
            "cost_known": all(s.cost_known for s in stats),
            "cost_per_minute": round(sum(s.cost for s in stats) / minutes, 6),
            "elapsed_seconds": round(self.elapsed, 1),
            "rejected": dict(sorted(self.rejected.items())),
        }

    def metadata(self) -> dict[str, Any]:
        settings = self.settings.__dict__
        return {
            "topic": self.settings.topic,
            "settings": settings,
            "started": self.started,
            "updated": _now(),
            "resumed_with": self.resumed_from,
            "metrics": self.metrics(),
            "rejected": dict(sorted(self.rejected.items())),
            "providers": {k: v.as_dict() for k, v in self.providers.items()},
            "producers": {str(k): v.as_dict() for k, v in sorted(self.producers.items())},
        }

    def maybe_snapshot(self) -> None:
        if time.monotonic() - self._last_snapshot >= SNAPSHOT_INTERVAL:
            self.snapshot()

    def snapshot(self) -> None:
        """Rewrite the three output files atomically from memory."""
        self._last_snapshot = time.monotonic()
        out = self.output_dir
        write_atomic(out / "output.txt", "".join(f"{r['attribute']}\n" for r in self.records))
        document = {"topic": self.settings.topic, "attributes": self.records}
        write_atomic(out / "output.json", json.dumps(document, ensure_ascii=False, indent=1))
        write_atomic(out / "metadata.json", json.dumps(self.metadata(), indent=2) + "\n")

    def close(self) -> None:
        """Final snapshot; called however the run ends (Ctrl-C and cancellation included)."""
        self.snapshot()
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _torn(path: Path) -> bool:
    """Whether ``path`` ends in a line without its newline."""
    with path.open("rb") as file:
        if file.seek(0, 2) == 0:
            return False
        file.seek(-1, 2)
        return file.read(1) != b"\n"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
    return records
