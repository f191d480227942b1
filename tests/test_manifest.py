"""The append-only manifest and the output-dir lock (tasks/manifest.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from blocks.errors import UsageError
from blocks.result import Completion, Usage
from tasks.manifest import STATE_DIR, BatchLock, Entry, Manifest


def manifest_file(output_dir: Path) -> Path:
    return output_dir / STATE_DIR / "manifest.jsonl"


def ok(relative: str, key: str = "k1", error: str | None = None) -> Entry:
    output = relative.removesuffix(".prompt.md") + ".md"
    return Entry(relative, key, "ok", output, error=error)


def test_missing_manifest_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path / "out")
    assert len(manifest) == 0 and manifest.get("a.prompt.md") is None
    assert manifest.failed() == set() and manifest.bad_lines == 0
    manifest.compact()
    assert not (tmp_path / "out").exists()


def test_record_writes_one_complete_json_line(tmp_path: Path) -> None:
    completion = Completion(
        text="hi",
        provider="openai",
        model="gpt-4o",
        usage=Usage(prompt_tokens=12, completion_tokens=34, cost=0.002),
        attempts=2,
    )
    with Manifest.open(tmp_path) as manifest:
        manifest.record(Entry.succeeded("sub/a.prompt.md", "k1", "sub/a.md", completion))
        manifest.record(Entry.failed("b.json.prompt.md", "k2", "answer holds no JSON"))
    lines = manifest_file(tmp_path).read_text().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    finished_at = first.pop("finished_at")
    assert finished_at.endswith("+00:00") and finished_at.startswith("20")
    assert first == {
        "relative": "sub/a.prompt.md",
        "key": "k1",
        "status": "ok",
        "output": "sub/a.md",
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "cost": 0.002},
        "attempts": 2,
        "error": None,
        "cached": False,
    }
    assert second["status"] == "failed" and second["error"] == "answer holds no JSON"
    assert second["output"] is None and second["usage"]["cost"] is None

    reloaded = Manifest.open(tmp_path)
    entry = reloaded.get("sub/a.prompt.md")
    assert entry is not None and entry.usage == completion.usage
    assert entry == Entry.succeeded("sub/a.prompt.md", "k1", "sub/a.md", completion)._replace(
        finished_at=finished_at
    )


def test_paid_rejected_answers_and_cached_answers_round_trip(tmp_path: Path) -> None:
    """A failed prompt's entry keeps the usage it paid for; a cached answer's costs nothing."""
    rejected = Completion(
        text="Sorry, {} is all I have.",
        provider="openai",
        model="gpt-4o",
        usage=Usage(prompt_tokens=40, completion_tokens=256, cost=0.0031),
        attempts=3,
    )
    with Manifest.open(tmp_path) as manifest:
        manifest.record(Entry.failed("a.json.prompt.md", "k1", "no JSON", paid=rejected))
        manifest.record(Entry.succeeded("b.prompt.md", "k2", "b.md", rejected, cached=True))
    reloaded = Manifest.open(tmp_path)
    failed, cached = reloaded.get("a.json.prompt.md"), reloaded.get("b.prompt.md")
    assert failed is not None and cached is not None
    assert (failed.status, failed.usage, failed.attempts) == ("failed", rejected.usage, 3)
    assert failed.error == "no JSON" and not failed.cached
    assert (cached.status, cached.cached, cached.attempts) == ("ok", True, 0)
    assert cached.usage == Usage(cost=0.0)


def test_record_stamps_the_finish_time_when_missing(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as manifest:
        manifest.record(ok("a.prompt.md"))
        stamped = manifest.get("a.prompt.md")
    assert stamped is not None and stamped.finished_at
    assert Manifest.open(tmp_path).get("a.prompt.md") == stamped


def test_each_line_goes_out_in_a_single_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    with Manifest.open(tmp_path) as manifest:
        manifest.record(ok("a.prompt.md", error="x" * 100_000))
        manifest.record(ok("b.prompt.md"))
    assert len(writes) == 2 and all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)


def test_latest_line_wins(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as manifest:
        manifest.record(Entry.failed("a.prompt.md", "k1", "boom"))
        manifest.record(ok("a.prompt.md", "k2"))
        manifest.record(ok("b.prompt.md", "k1"))
        manifest.record(Entry.failed("b.prompt.md", "k3", "later failure"))
        assert manifest.get("a.prompt.md").key == "k2"  # type: ignore[union-attr]
    reloaded = Manifest.open(tmp_path)
    assert len(reloaded) == 2
    assert reloaded.get("a.prompt.md").status == "ok"  # type: ignore[union-attr]
    assert reloaded.get("b.prompt.md").key == "k3"  # type: ignore[union-attr]
    assert reloaded.failed() == {"b.prompt.md"}
    assert [e.relative for e in reloaded.entries()] == ["a.prompt.md", "b.prompt.md"]


def test_failed_lists_only_prompts_whose_latest_entry_failed(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as manifest:
        manifest.record(Entry.failed("fixed.prompt.md", "k", "boom"))
        manifest.record(ok("fixed.prompt.md"))
        manifest.record(Entry.failed("still.prompt.md", "k", "boom"))
        manifest.record(Entry("skipped.prompt.md", "k", "skipped"))
    assert Manifest.open(tmp_path).failed() == {"still.prompt.md"}


def test_torn_last_line_is_ignored_and_not_glued_to_the_next(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as manifest:
        manifest.record(ok("a.prompt.md", "k1"))
        manifest.record(ok("b.prompt.md", "k1"))
    path = manifest_file(tmp_path)
    complete = path.read_bytes()
    torn = ok("a.prompt.md", "k2").to_json().encode()[:40]  # kill -9 in the middle of a write
    path.write_bytes(complete + torn)

    reloaded = Manifest.open(tmp_path)
    assert reloaded.bad_lines == 1
    assert reloaded.get("a.prompt.md").key == "k1"  # type: ignore[union-attr]
    reloaded.record(ok("c.prompt.md"))
    reloaded.close()

    again = Manifest.open(tmp_path)
    assert sorted(e.relative for e in again.entries()) == [
        "a.prompt.md",
        "b.prompt.md",
        "c.prompt.md",
    ]
    assert again.bad_lines == 1  # the torn line stays a line of its own
    assert path.read_bytes().startswith(complete + torn + b"\n")


def test_a_write_that_fails_midway_does_not_corrupt_the_next_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = Manifest.open(tmp_path)
    manifest.record(ok("a.prompt.md"))
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 20:
            return real_write(fd, data[:20])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        manifest.record(ok("b.prompt.md"))
    monkeypatch.undo()
    assert manifest.get("b.prompt.md") is None
    manifest.record(ok("c.prompt.md"))
    manifest.close()
    reloaded = Manifest.open(tmp_path)
    assert [e.relative for e in reloaded.entries()] == ["a.prompt.md", "c.prompt.md"]
    assert reloaded.bad_lines == 1


@pytest.mark.parametrize(
    "junk",
    [
        b"not json at all",
        b'{"relative": "x.prompt.md", "key": "k", "status": "weird"}',
        b'{"relative": "x.prompt.md", "key": "k", "status": "ok", "usage": {"cost": "free"}}',
        b'{"relative": "", "key": "k", "status": "ok"}',
        b'["relative", "key"]',
        b"\xff\xfe",
        b"{}",
    ],
)
def test_corrupt_lines_anywhere_are_skipped(tmp_path: Path, junk: bytes) -> None:
    path = manifest_file(tmp_path)
    path.parent.mkdir(parents=True)
    good = [ok(f"{n}.prompt.md").to_json().encode() for n in "ab"]
    path.write_bytes(good[0] + b"\n" + junk + b"\n\n" + good[1] + b"\n")
    manifest = Manifest.open(tmp_path)
    assert [e.relative for e in manifest.entries()] == ["a.prompt.md", "b.prompt.md"]
    assert manifest.bad_lines == 1


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    path = manifest_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"relative": "a.prompt.md", "key": "k", "status": "ok", "future": 1}\n')
    assert Manifest.open(tmp_path).get("a.prompt.md") == Entry("a.prompt.md", "k", "ok")


def test_compact_keeps_the_latest_entry_of_each_prompt(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path)
    for key in ("k1", "k2", "k3"):
        manifest.record(ok("b.prompt.md", key))
    manifest.record(Entry.failed("a.prompt.md", "k1", "boom"))
    path = manifest_file(tmp_path)
    with path.open("ab") as f:
        f.write(b'{"relative": "torn')
    manifest.compact()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["relative"], d["key"]) for d in lines] == [
        ("a.prompt.md", "k1"),
        ("b.prompt.md", "k3"),
    ]
    # Later records land in the new file, not in the one compact replaced.
    manifest.record(ok("c.prompt.md"))
    manifest.close()
    reloaded = Manifest.open(tmp_path)
    assert len(reloaded) == 3 and reloaded.bad_lines == 0
    assert os.listdir(path.parent) == ["manifest.jsonl"]


def test_failed_compact_leaves_the_manifest_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = Manifest.open(tmp_path)
    manifest.record(ok("a.prompt.md", "k1"))
    manifest.record(ok("a.prompt.md", "k2"))
    before = manifest_file(tmp_path).read_bytes()

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        manifest.compact()
    monkeypatch.undo()
    assert manifest_file(tmp_path).read_bytes() == before
    manifest.record(ok("b.prompt.md"))  # still usable
    assert len(Manifest.open(tmp_path)) == 2


def test_concurrent_records_never_interleave(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path)

    def worker(n: int) -> None:
        for i in range(200):
            manifest.record(ok(f"t{n}/p{i}.prompt.md", error="e" * 500))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manifest.close()
    reloaded = Manifest.open(tmp_path)
    assert len(reloaded) == 800 and reloaded.bad_lines == 0


def test_ten_thousand_entries_and_a_torn_line_load(tmp_path: Path) -> None:
    path = manifest_file(tmp_path)
    path.parent.mkdir(parents=True)
    usage = {"prompt_tokens": 1200, "completion_tokens": 800, "cost": 0.0123}
    lines = [
        Entry(
            f"folder/p{i}.json.prompt.md",
            "f" * 64,
            "ok",
            f"folder/p{i}.json",
            1200,
            800,
            0.0123,
            1,
            None,
            "2025-01-01T00:00:00.000+00:00",
        ).to_json()
        for i in range(10_000)
    ]
    # A torn last line (a crash mid-append) takes the careful path; its speed is measured by
    # the no-op rerun in bench/batch_bench.py, not here.
    path.write_text("\n".join(lines) + '\n{"relative": "torn')
    manifest = Manifest.open(tmp_path)
    assert len(manifest) == 10_000 and manifest.bad_lines == 1
    assert manifest.get("folder/p9999.json.prompt.md").usage == Usage(**usage)  # type: ignore[union-attr]


# BatchLock


def test_lock_records_the_pid_and_clears_it_on_release(tmp_path: Path) -> None:
    lock_file = tmp_path / STATE_DIR / "lock"
    with BatchLock(tmp_path):
        pid, host, started = lock_file.read_text().split()
        assert (pid, host) == (str(os.getpid()), socket.gethostname())
        assert datetime.fromisoformat(started).tzinfo is not None
        # A second lock, even in the same process, is refused.
        holder = f"\\(pid {os.getpid()} on {re.escape(host)}, started {re.escape(started)}\\)"
        with pytest.raises(UsageError, match=holder), BatchLock(tmp_path):
            pass
    assert lock_file.exists() and lock_file.read_text() == ""  # kept: deleting it races
    with BatchLock(tmp_path):  # free again
        pass


HOLDER = """
import sys, time
from pathlib import Path
from tasks.manifest import BatchLock
with BatchLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_held_by_another_process_until_it_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(UsageError) as caught, BatchLock(out):
            pass
        started = (out / STATE_DIR / "lock").read_text().split()[2]
        assert str(caught.value) == (
            f"output dir {out} is in use by another batch run (pid {holder.pid} on "
            f"{socket.gethostname()}, started {started}); "
            "wait for it to finish or choose another --output-dir"
        )
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup code runs: the kernel frees the lock
        holder.wait(timeout=10)
        with BatchLock(out):
            assert (out / STATE_DIR / "lock").read_text().split()[0] == str(os.getpid())
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lock_is_reported_without_a_readable_pid(tmp_path: Path) -> None:
    with BatchLock(tmp_path):
        (tmp_path / STATE_DIR / "lock").write_text("")
        with pytest.raises(UsageError, match=r"\(pid unknown\)"), BatchLock(tmp_path):
            pass
