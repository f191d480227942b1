"""What each batch run did, per prompt, and the lock that keeps two runs apart.

Both live in ``<output_dir>/.llm-conductor/``:

* ``manifest.jsonl``: one JSON line per finished prompt, appended as soon as the prompt
  finishes, so a run killed at any moment keeps everything it finished. The last line of a
  prompt wins; ``compact`` rewrites the file with only those at the end of a run.
* ``lock``: held with ``flock`` for the whole run. The kernel drops it when the process dies,
  even on ``kill -9``, so there is never a stale lock to clean up by hand. The file itself is
  never deleted (deleting a lock file lets two runs lock two different files). It holds the
  holder's pid, host and start time, for the message that refuses a second run. Explore
  locks its topic folder with the same class.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

from blocks.errors import UsageError
from blocks.result import Completion, Usage
from tasks.outputs import write_atomic

__all__ = ["STATE_DIR", "BatchLock", "Entry", "Manifest", "Status"]

#: Folder of the output dir that holds the manifest and the lock.
STATE_DIR = ".llm-conductor"

Status = Literal["ok", "failed", "skipped"]
_STATUSES: frozenset[str] = frozenset(("ok", "failed", "skipped"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Entry(NamedTuple):
    """How one prompt ended in one run (a NamedTuple: loading 10,000 must stay fast).

    Attributes:
        relative: The prompt's path below the input dir (``PromptFile.relative``).
        key: The ``prompt_key`` the run used.
        status: ``"ok"``, ``"failed"`` or ``"skipped"``.
        output: The output's path below the output dir, when one was written.
        prompt_tokens, completion_tokens, cost: Usage of every call made for this prompt in
            this run, a rejected answer's included (``usage`` gives them as a ``Usage``);
            cost is None when unknown. Zero for an answer read from the cache.
        attempts: Calls made, retries included.
        error: One line saying why the prompt failed.
        finished_at: ISO 8601 UTC time; ``Manifest.record`` stamps it when empty.
        cached: The answer came from the answer cache: no call was made in this run.
        truncated: The output was written although the answer was still cut off
            (``accept_truncated``).
        usage_estimated: The token counts are litellm's estimate (the server sent none).
    """

    relative: str
    key: str
    status: Status
    output: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    attempts: int = 0
    error: str | None = None
    finished_at: str = ""
    cached: bool = False
    truncated: bool = False
    usage_estimated: bool = False

    @classmethod
    def succeeded(
        cls, relative: str, key: str, output: str, completion: Completion, cached: bool = False
    ) -> Entry:
        """The entry of a prompt whose output was written; a ``cached`` answer cost nothing."""
        if cached:
            return cls(relative, key, "ok", output, cost=0.0, finished_at=_now(), cached=True)
        usage = completion.usage
        return cls(
            relative,
            key,
            "ok",
            output,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cost,
            completion.attempts,
            finished_at=_now(),
            truncated=completion.truncated,
            usage_estimated=usage.estimated,
        )

    @classmethod
    def failed(
        cls, relative: str, key: str, error: str, attempts: int = 1, paid: Completion | None = None
    ) -> Entry:
        """The entry of a prompt that produced no output; ``paid`` is the answer it got
        anyway (rejected, or not written), whose usage counts."""
        if paid is None:
            return cls(relative, key, "failed", error=error, attempts=attempts, finished_at=_now())
        usage = paid.usage
        return cls(
            relative,
            key,
            "failed",
            None,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cost,
            paid.attempts,
            error,
            _now(),
        )

    @property
    def usage(self) -> Usage:
        """The token counts and cost as a ``Usage``."""
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost,
            estimated=self.usage_estimated,
        )

    def to_json(self) -> str:
        """The entry as one line of JSON, without the line break."""
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }
        # The marks only when set: the lines of ordinary prompts stay as they were.
        if self.usage_estimated:
            usage["estimated"] = True
        marks = {"truncated": True} if self.truncated else {}
        return json.dumps(
            {
                "relative": self.relative,
                "key": self.key,
                "status": self.status,
                "output": self.output,
                "usage": usage,
                "attempts": self.attempts,
                "error": self.error,
                "finished_at": self.finished_at,
                "cached": self.cached,
                **marks,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_dict(cls, data: Any) -> Entry:
        """Rebuild an entry from a parsed manifest line; unknown keys are ignored.

        Raises:
            ValueError: The line is not an entry (a field is missing or has the wrong type).
        """
        if type(data) is not dict:
            raise ValueError("not a JSON object")
        usage = data.get("usage") or {}
        if type(usage) is not dict:
            raise ValueError("usage is not an object")
        entry = cls(
            data.get("relative"),  # type: ignore[arg-type]  # checked below
            data.get("key"),  # type: ignore[arg-type]
            data.get("status"),  # type: ignore[arg-type]
            data.get("output"),
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            usage.get("cost"),
            data.get("attempts", 0),
            data.get("error"),
            data.get("finished_at", ""),
            data.get("cached", False),
            data.get("truncated", False),
            usage.get("estimated", False),
        )
        if tuple(map(type, entry)) not in _SHAPES or entry.status not in _STATUSES:
            raise ValueError("not a manifest entry")
        if not entry.relative:
            raise ValueError("empty relative path")
        return entry


_NONE = type(None)
# Every valid combination of field types, so that checking an entry is one set lookup.
_SHAPES = frozenset(
    (str, str, str, output, int, int, cost, int, error, str, bool, bool, bool)
    for output in (str, _NONE)
    for cost in (int, float, _NONE)
    for error in (str, _NONE)
)


class Manifest:
    """The latest entry of every prompt, backed by an append-only JSON-lines file.

    Open it while holding ``BatchLock``: the lock is what makes appending and ``compact``
    safe against another run.
    """

    def __init__(self, path: Path, entries: dict[str, Entry], bad_lines: int = 0) -> None:
        self.path = path
        #: Lines that were skipped on load because they are not entries, a torn last line
        #: included (worth a warning: those prompts will run again).
        self.bad_lines = bad_lines
        self._entries = entries
        self._fd: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, output_dir: Path) -> Manifest:
        """Load ``<output_dir>/.llm-conductor/manifest.jsonl``; a missing one is empty.

        Nothing is created until the first ``record``.
        """
        path = output_dir / STATE_DIR / "manifest.jsonl"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, {})
        entries: dict[str, Entry] = {}
        bad = 0
        for record in _parse_lines(data):
            try:
                entry = Entry.from_dict(record)
            except ValueError:
                bad += 1
                continue
            entries[entry.relative] = entry
        return cls(path, entries, bad)

    def get(self, relative: str | PurePosixPath) -> Entry | None:
        """The latest entry of one prompt, or None if it never finished."""
        return self._entries.get(str(relative))

    def entries(self) -> list[Entry]:
        """The latest entry of every prompt, sorted by relative path."""
        return [self._entries[k] for k in sorted(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)

    def failed(self) -> set[str]:
        """The prompts whose latest entry is a failure (for ``--retry-errors``)."""
        return {rel for rel, entry in self._entries.items() if entry.status == "failed"}

    def record(self, entry: Entry) -> None:
        """Append one entry and make it the prompt's latest.

        The line goes out in a single ``write`` to a file opened with ``O_APPEND``, so lines
        never interleave and a crash can only tear the line being written. It reaches the
        kernel at once (it survives the process being killed) but is not fsynced.
        """
        if not entry.finished_at:
            entry = entry._replace(finished_at=_now())
        line = (entry.to_json() + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._fd, torn = self._open_for_append()
                if torn:
                    # Finish the torn line of a killed run, or this entry would be glued to it.
                    line = b"\n" + line
            try:
                _write_all(self._fd, line)
            except BaseException:
                self._close()  # part of the line may be out: reopening checks for a torn tail
                raise
            self._entries[entry.relative] = entry

    def compact(self) -> None:
        """Rewrite the file atomically with only the latest entry of each prompt."""
        with self._lock:
            if not self._entries and not self.path.exists():
                return
            self._close()  # the open descriptor would keep writing to the replaced file
            write_atomic(self.path, "".join(e.to_json() + "\n" for e in self.entries()))
            self.bad_lines = 0

    def close(self) -> None:
        """Close the file; a later ``record`` reopens it."""
        with self._lock:
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_for_append(self) -> tuple[int, bool]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        size = os.fstat(fd).st_size
        return fd, size > 0 and os.pread(fd, 1, size - 1) != b"\n"

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _parse_lines(data: bytes) -> list[Any]:
    """The JSON value of every non-blank line, in order; None for a line that is not JSON."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    # Every entry line ends with "}": anything else (a torn line) is left out up front, so that
    # one parse of all lines, twice as fast as one per line, almost always succeeds.
    whole = [line for line in lines if line.rstrip().endswith(b"}")]
    with contextlib.suppress(ValueError):
        values = json.loads(b"[" + b",".join(whole) + b"]")
        if len(values) == len(whole):
            return values + [None] * (len(lines) - len(whole))
    return [_parse_line(line) for line in lines]


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole line in one write; the loop only guards a short write
    # (disk full), which then raises on the next round instead of dropping the rest.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: The lock file a command holds for the flow it runs (``BatchLock.handed_down``).
_HANDED_DOWN: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "batch_lock_handed_down", default=None
)


class BatchLock:
    """Exclusive use of an output dir for one batch run (or, with ``purpose`` and ``hint``,
    of a topic folder for one explore run).

    Example:
        ```python
        with BatchLock(output_dir):
            manifest = Manifest.open(output_dir)
            ...
        ```

    A command takes the lock before Prefect starts (a second run is refused at once) and
    hands it to the flow it runs with ``handed_down()``; the flow's own ``BatchLock`` on that
    folder is then a no-op (a deployment run has no command around it and takes it itself).

    Raises:
        UsageError: On entering, when another run holds the lock; names its pid, host and
            start time.
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        purpose: str = "output dir {dir} is in use by another batch run",
        hint: str = "wait for it to finish or choose another --output-dir",
    ) -> None:
        self.output_dir = output_dir
        self.path = output_dir / STATE_DIR / "lock"
        self._purpose = purpose
        self._hint = hint
        self._fd: int | None = None
        self._nested = False

    def __enter__(self) -> Self:
        if self._fd is not None or self._nested:
            raise RuntimeError(f"{self.path} is already held by this BatchLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.resolve() == _HANDED_DOWN.get():
            self._nested = True
            return self
        # O_CLOEXEC: a child (claude, codex) must not inherit the lock and keep it after we die.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UsageError(
                f"{self._purpose.format(dir=self.output_dir)} ({holder}); {self._hint}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {started}\n".encode(), 0)
        self._fd = fd
        return self

    @contextlib.contextmanager
    def handed_down(self) -> Iterator[None]:
        """Inside (and in tasks and event loops started inside), this lock counts as taken."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not held by this BatchLock")
        token = _HANDED_DOWN.set(self.path.resolve())
        try:
            yield
        finally:
            _HANDED_DOWN.reset(token)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._nested:
            self._nested = False
            return
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale pid for the next reader
        finally:
            os.close(fd)  # releases the lock


def _read_holder(fd: int) -> str:
    """ "pid 123 on host, started 2026-12-03T10:00:00+00:00" from the lock file's line."""
    try:
        fields = os.pread(fd, 512, 0).decode("utf-8").split()
    except (OSError, UnicodeDecodeError):
        fields = []
    if not fields or not fields[0].isdigit():
        return "pid unknown"
    if len(fields) < 3:
        return f"pid {fields[0]}"
    return f"pid {fields[0]} on {fields[1]}, started {fields[2]}"
