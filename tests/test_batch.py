"""The batch flow end to end, on a temporary Prefect API and the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from blocks import LLMProvider, UsageError
from flows.batch import run_batch
from tasks.manifest import BatchLock, Manifest
from tests.support.prefect_runs import latest_task_runs

pytestmark = pytest.mark.usefixtures("prefect_harness")


def provider(server, **kw) -> LLMProvider:
    values = dict(
        kind="openai",
        model="test-model",
        api_base=server.base_url,
        api_key="sk-x",
        backoff_base=0.0,
        timeout=5,
        retries=1,
    )
    values.update(kw)
    return LLMProvider(**values)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def prompts_sent(server) -> list[str]:
    return [r.json["messages"][0]["content"] for r in server.requests]


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "in", tmp_path / "out"


def reply_json_or_text(body) -> str:
    prompt = body["messages"][0]["content"]
    if "only json" in prompt:  # auto format: an answer that is nothing but JSON -> .json
        return f'```json\n{{"answer": "{prompt}"}}\n```'
    if "json" in prompt:  # prose around the JSON, braces in the prose
        return f'Sure! Here it is {{not json}}:\n```json\n{{"answer": "{prompt}"}}\n```\nBye {{x}}'
    return f"text for: {prompt}"


#: Both ways of running a batch: a task run per prompt (default) or per worker.
both_modes = pytest.mark.parametrize(
    "task_per_prompt", [True, False], ids=["task-per-prompt", "task-per-worker"]
)


@both_modes
def test_outputs_naming_headers_and_rerun_skips(llm_server, dirs, task_per_prompt):
    src, out = dirs
    llm_server.reply = reply_json_or_text
    write(src / "a.md.prompt.md", "prompt a")
    write(src / "b.json.prompt.md", "prompt b as json")
    write(src / "sub/c.prompt.md", "prompt c as only json")
    write(src / "sub/d.prompt.md", "prompt d")
    write(src / "sub/f.prompt.md", "prompt f with json and prose")
    write(src / "sub/e.txt.prompt.md", "prompt e")
    summary = run_batch(
        provider(llm_server), src, out, recursive=True, task_per_prompt=task_per_prompt
    )
    assert (summary.ok, summary.failed, summary.exit_code) == (6, 0, 0)
    assert sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".llm-conductor" not in p.parts
    ) == ["a.md", "b.json", "sub/c.json", "sub/d.md", "sub/e.txt", "sub/f.md"]
    b = json.loads((out / "b.json").read_text())
    assert b["answer"] == "prompt b as json"
    assert len(b["_prompt_hash"]) == 64 and b["_llm_metadata"]["provider"] == "openai"
    a = (out / "a.md").read_text().splitlines()
    assert a[0].startswith("<!-- Prompt Hash: ") and a[1].startswith("<!-- LLM Metadata: {")
    assert a[-1] == "text for: prompt a"
    assert "Sure! Here it is" in (out / "sub/f.md").read_text(), "auto never drops prose"
    assert len(llm_server.requests) == 6

    llm_server.reset()
    again = run_batch(provider(llm_server), src, out, recursive=True)
    assert (again.up_to_date, again.ok, again.exit_code) == (6, 0, 0)
    assert llm_server.requests == []


def test_change_detection_content_model_params_format(llm_server, dirs):
    src, out = dirs
    write(src / "a.prompt.md", "first")
    write(src / "b.prompt.md", "second")
    run_batch(provider(llm_server), src, out)
    llm_server.reset()

    write(src / "a.prompt.md", "first, edited")
    run_batch(provider(llm_server), src, out)
    assert prompts_sent(llm_server) == ["first, edited"]

    for change in ({"model": "other-model"}, {"temperature": 0.5}, {"kind": "openrouter"}):
        llm_server.reset()
        run_batch(provider(llm_server, **change), src, out)
        assert sorted(prompts_sent(llm_server)) == ["first, edited", "second"], change

    llm_server.reset()
    (src / "b.prompt.md").rename(src / "b.md.prompt.md")  # explicit format now
    run_batch(provider(llm_server, kind="openrouter"), src, out)
    assert prompts_sent(llm_server) == ["second"]


@both_modes
def test_force_regenerates_everything(llm_server, dirs, task_per_prompt):
    src, out = dirs
    write(src / "a.prompt.md", "one")
    run_batch(provider(llm_server), src, out)
    llm_server.reset()
    run_batch(provider(llm_server), src, out, force=True, task_per_prompt=task_per_prompt)
    assert prompts_sent(llm_server) == ["one"], "--force does not take the cached answer"


def test_seed_outputs_are_recognised(llm_server, dirs):
    src, out = dirs
    raw = b"an old prompt\n"
    write(src / "old.md.prompt.md", raw)
    write(src / "old.json.prompt.md", raw + b"json")
    seed = hashlib.sha256(raw).hexdigest()
    write(out / "old.md", f"<!-- Prompt Hash: {seed} -->\nold answer\n")
    seed_json = hashlib.sha256(raw + b"json").hexdigest()
    write(out / "old.json", json.dumps({"x": 1, "_prompt_hash": seed_json}))
    summary = run_batch(provider(llm_server), src, out)
    assert summary.up_to_date == 2 and llm_server.requests == []


def test_json_arrays_are_tracked_by_the_manifest(llm_server, dirs):
    src, out = dirs
    llm_server.reply = '["x", "y"]'
    write(src / "list.json.prompt.md", "give json list")
    run_batch(provider(llm_server), src, out)
    assert json.loads((out / "list.json").read_text()) == ["x", "y"]
    llm_server.reset()
    assert run_batch(provider(llm_server), src, out).up_to_date == 1
    assert llm_server.requests == []


def test_invalid_json_fails_writes_nothing_and_retry_errors_runs_only_it(llm_server, dirs):
    src, out = dirs
    llm_server.reply = lambda body: (
        "no json here, sorry {really}"
        if "broken" in body["messages"][0]["content"]
        else '{"ok": true}'
    )
    write(src / "good.json.prompt.md", "good")
    write(src / "bad.json.prompt.md", "broken")
    summary = run_batch(provider(llm_server), src, out)
    assert (summary.ok, summary.failed, summary.exit_code) == (1, 1, 1)
    assert not (out / "bad.json").exists()
    kept = out / ".llm-conductor/rejected/bad.json.prompt.md.txt"
    assert kept.read_text() == "no json here, sorry {really}", "a paid answer is never lost"
    entry = Manifest.open(out).get("bad.json.prompt.md")
    assert entry.status == "failed" and "JSON" in entry.error

    llm_server.reset()
    llm_server.reply = '{"fixed": true}'
    retried = run_batch(provider(llm_server), src, out, retry_errors=True)
    assert prompts_sent(llm_server) == ["broken"]
    assert retried.exit_code == 0 and json.loads((out / "bad.json").read_text())["fixed"]


def test_bad_prompt_files_are_reported_and_the_rest_runs(llm_server, dirs, tmp_path):
    src, out = dirs
    write(src / "ok.prompt.md", "fine")
    write(src / "empty.prompt.md", "  \n\t\n")
    write(src / "latin1.prompt.md", "caf\xe9".encode("latin-1"))
    outside = write(tmp_path / "secret.prompt.md", "outside")
    (src / "link.prompt.md").symlink_to(outside)
    summary = run_batch(provider(llm_server), src, out)
    assert (summary.ok, summary.failed, summary.exit_code) == (1, 3, 1)
    assert prompts_sent(llm_server) == ["fine"]


@both_modes
def test_parallelism_bounds_requests_in_flight(llm_server, dirs, task_per_prompt):
    src, out = dirs
    llm_server.latency = 0.15
    llm_server.hold_until_in_flight = 4  # reached however slowly the workers start
    for i in range(16):
        write(src / f"p{i:02}.prompt.md", f"prompt {i}")
    summary = run_batch(
        provider(llm_server), src, out, parallelism=4, task_per_prompt=task_per_prompt
    )
    assert summary.ok == 16
    assert llm_server.max_in_flight == 4


def test_block_parallelism_is_the_default(llm_server, dirs):
    src, out = dirs
    llm_server.latency = 0.15
    llm_server.hold_until_in_flight = 3
    for i in range(9):
        write(src / f"p{i}.prompt.md", f"prompt {i}")
    run_batch(provider(llm_server, parallelism=3), src, out)
    assert llm_server.max_in_flight == 3


def test_max_cost_stops_starting_new_prompts(llm_server, dirs):
    src, out = dirs
    for i in range(6):
        write(src / f"p{i}.prompt.md", f"prompt number {i} " * 50)
    summary = run_batch(
        provider(llm_server, model="gpt-4o-mini"), src, out, parallelism=1, max_cost=1e-9
    )
    assert summary.ok == 1 and summary.not_started == 5
    assert len(llm_server.requests) == 1


def test_time_budget_stops_starting_new_prompts_and_keeps_the_finished(llm_server, dirs):
    """One prompt at a time; its answer takes the whole budget (it is asked after the budget's
    clock started), so no other one starts. The budget leaves the first prompt ample time to
    start on a busy machine."""
    src, out = dirs
    for i in range(3):
        write(src / f"p{i}.prompt.md", f"prompt number {i}")
    llm_server.latency = 20.0
    summary = run_batch(provider(llm_server, timeout=60), src, out, parallelism=1, time_budget=20)
    assert (summary.ok, summary.not_started, summary.exit_code) == (1, 2, 0)
    assert "2 not started (budget reached)" in summary.line()
    assert len(list(out.glob("p*.md"))) == 1
    llm_server.latency = 0.0
    again = run_batch(provider(llm_server, timeout=60), src, out)
    assert (again.ok, again.up_to_date) == (2, 1), "the rest runs next time, nothing twice"


@pytest.mark.parametrize(
    ("first_per_prompt", "second_per_prompt"),
    [(True, True), (False, False), (False, True), (True, False)],
    ids=["per-prompt", "per-worker", "per-worker-then-per-prompt", "per-prompt-then-per-worker"],
)
def test_answer_paid_but_not_written_is_not_paid_again(
    llm_server, dirs, first_per_prompt, second_per_prompt
):
    src, out = dirs
    write(src / "a.md.prompt.md", "expensive")
    (out / "a.md").mkdir(parents=True)  # the write will fail after the model answered
    first = run_batch(provider(llm_server), src, out, task_per_prompt=first_per_prompt)
    assert first.failed == 1 and len(llm_server.requests) == 1
    (out / "a.md").rmdir()
    second = run_batch(provider(llm_server), src, out, task_per_prompt=second_per_prompt)
    assert second.ok == 1
    assert len(llm_server.requests) == 1, "the persisted answer was reused"
    assert (out / "a.md").read_text().endswith("\n") or (out / "a.md").stat().st_size > 0


def test_files_from_runs_exactly_the_listed_prompts(llm_server, dirs):
    src, out = dirs
    write(src / "a.prompt.md", "A")
    write(src / "b.prompt.md", "B")
    run_batch(provider(llm_server), src, out, files_from=[str(src / "b.prompt.md"), ""])
    assert prompts_sent(llm_server) == ["B"]


def test_files_from_as_the_seed_lists_them_and_deleted_prompts_only_warn(
    llm_server, dirs, tmp_path, monkeypatch, batch_log
):
    """Lines relative to --input-dir (the seed's rule) or to here both work; a prompt that a
    diff lists as deleted is a warning, not a failure."""
    src, out = dirs
    write(src / "sub/a.prompt.md", "A")
    write(src / "b.prompt.md", "B")
    monkeypatch.chdir(tmp_path)
    listed = ["sub/a.prompt.md", "in/b.prompt.md", "in/deleted.prompt.md"]
    summary = run_batch(provider(llm_server), Path("in"), out, files_from=listed)
    assert sorted(prompts_sent(llm_server)) == ["A", "B"]
    assert (summary.ok, summary.failed, summary.missing, summary.exit_code) == (2, 0, 1, 0)
    assert "1 listed but missing (skipped)" in summary.line()
    warnings = [line for line in batch_log if "deleted.prompt.md" in line]
    assert warnings == [
        "skipped in/deleted.prompt.md: no such file (listed in --files-from, no longer there)"
    ]

    batch_log.clear()  # only deleted prompts listed: nothing to do, still no failure
    only_gone = run_batch(provider(llm_server), Path("in"), out, files_from=["gone.prompt.md"])
    assert (only_gone.total, only_gone.missing, only_gone.exit_code) == (0, 1, 0)
    assert [line for line in batch_log if not line.startswith("batch: ")] == [
        "skipped gone.prompt.md: no such file (listed in --files-from, no longer there)"
    ]


def test_usage_errors(llm_server, dirs, tmp_path):
    src, out = dirs
    src.mkdir()
    with pytest.raises(UsageError, match="no \\*.prompt.md files"):
        run_batch(provider(llm_server), src, out)
    write(src / "a.prompt.md", "A")
    with pytest.raises(UsageError, match="parallelism"):
        run_batch(provider(llm_server), src, out, parallelism=0)
    blocker = write(tmp_path / "file", "x")
    with pytest.raises(UsageError, match="not writable"):
        run_batch(provider(llm_server), src, blocker / "sub")
    with pytest.raises(UsageError, match="does not exist"):
        run_batch(provider(llm_server), tmp_path / "nope", out)
    assert llm_server.requests == []


def test_a_second_run_on_the_same_output_dir_is_refused(llm_server, dirs):
    src, out = dirs
    write(src / "a.prompt.md", "A")
    out.mkdir()
    with BatchLock(out), pytest.raises(UsageError, match="in use by another batch run"):
        run_batch(provider(llm_server), src, out)
    assert llm_server.requests == []


def test_artifacts_are_created(llm_server, dirs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    src, out = dirs
    write(src / "a.prompt.md", "artifact prompt")
    run_batch(provider(llm_server), src, out)

    async def latest(key: str):
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            )
            return sorted(found, key=lambda a: a.created)[-1]

    summary = asyncio.run(latest("batch-summary"))
    assert "| Generated | 1 |" in summary.data
    table = asyncio.run(latest("batch-prompts"))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert rows[0]["file"] == "a.prompt.md" and rows[0]["status"] == "ok"
    progress = asyncio.run(latest("batch-progress"))
    assert float(progress.data) == 100.0
    assert summary.flow_run_id == table.flow_run_id == progress.flow_run_id


@both_modes
def test_task_runs_are_one_per_prompt_or_one_per_worker(llm_server, dirs, task_per_prompt):
    src, out = dirs
    for i in range(6):
        write(src / f"p{i}.prompt.md", f"prompt {i}")
    summary = run_batch(
        provider(llm_server), src, out, parallelism=2, task_per_prompt=task_per_prompt
    )
    assert summary.ok == 6
    per_prompt = [f"p{i}.prompt.md" for i in range(6)]
    expected = per_prompt if task_per_prompt else ["worker 1", "worker 2"]
    runs = asyncio.run(latest_task_runs(len(expected)))
    assert runs == [(name, "COMPLETED") for name in expected]


@both_modes
def test_task_runs_cut_short_by_ctrl_c_end_cancelled_and_the_rerun_asks_again(
    llm_server, dirs, task_per_prompt
):
    """Stopped task runs end Cancelled, not Crashed; a per-prompt one caches nothing, so the
    next run gets real answers for the stopped prompts, not the stopped state back."""
    import os
    import signal
    import threading
    import time

    src, out = dirs
    for i in range(8):
        write(src / f"p{i}.prompt.md", f"prompt {i}")
    llm_server.latency = 60  # every request is in flight when Ctrl-C comes

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while llm_server.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    slow = provider(llm_server, timeout=120)  # no retry while the other worker starts
    with pytest.raises(KeyboardInterrupt):
        run_batch(slow, src, out, parallelism=2, task_per_prompt=task_per_prompt)
    stopped = ["p0.prompt.md", "p1.prompt.md"] if task_per_prompt else ["worker 1", "worker 2"]
    assert asyncio.run(latest_task_runs(2)) == [(name, "CANCELLED") for name in stopped]
    assert not list(out.glob("*.md"))

    llm_server.latency = 0
    summary = run_batch(slow, src, out, parallelism=2, task_per_prompt=task_per_prompt)
    assert summary.ok == 8 and summary.failed == 0
    for i in range(8):
        assert f"prompt {i}" in (out / f"p{i}.md").read_text()
    assert len(llm_server.requests) == 2 + 8  # the two stopped prompts were asked again


@both_modes
def test_ctrl_c_stops_new_prompts_even_if_a_library_swallows_the_cancellation(
    llm_server, dirs, monkeypatch, task_per_prompt
):
    """Ctrl-C must not depend on every library passing asyncio's one cancellation on."""
    import os
    import signal
    import threading
    import time

    src, out = dirs
    n = 40
    for i in range(n):
        write(src / f"p{i:02}.md.prompt.md", f"prompt {i}")
    llm_server.latency = 0.2
    original = LLMProvider.acomplete

    async def stubborn(self, prompt, **kw):
        try:
            return await original(self, prompt, **kw)
        except asyncio.CancelledError:  # what a misbehaving library does
            asyncio.current_task().uncancel()
            return await original(self, prompt, **kw)

    monkeypatch.setattr(LLMProvider, "acomplete", stubborn)

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.md"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_batch(provider(llm_server), src, out, parallelism=2, task_per_prompt=task_per_prompt)
    written = list(out.glob("*.md"))
    assert 3 <= len(written) < n - 10, "prompts kept starting after Ctrl-C"
    assert len(llm_server.requests) <= len(written) + 2 * 2  # in flight, sent again once


def test_a_rerun_with_nothing_to_do_never_imports_prefect(dirs, tmp_path):
    """No Prefect API configured anywhere: the plan alone answers a no-op rerun (≈1 s less
    than importing Prefect to ask it), with the same summary and exit code."""
    import os
    import subprocess
    import sys

    from flows.runtime import _settings_sources_exist

    src, out = dirs
    for i in range(3):
        write(src / f"p{i}.prompt.md", f"prompt {i}")
    assert run_batch(LLMProvider(kind="random"), src, out).ok == 3

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(HOME=str(home), PREFECT_HOME=str(home / ".prefect"))
    code = (
        "import sys\n"
        "from flows.cli import main\n"
        "try:\n"
        "    main(['batch', '-p', 'random', '-i', sys.argv[1], '-o', sys.argv[2]])\n"
        "except SystemExit as done:\n"
        "    print(done.code, 'prefect' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(src), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["0", "False"], result.stderr
    assert "0 ok, 0 failed, 3 up to date" in result.stderr
    assert not _settings_sources_exist(tmp_path)  # what made it safe not to ask Prefect


@pytest.mark.parametrize(
    ("where", "text", "maybe"),
    [
        (None, "", False),
        (".env", "LOG_LEVEL=debug\n", True),
        ("prefect.toml", "[logging]\nlevel = 'INFO'\n", True),
        ("pyproject.toml", "[project]\nname = 'x'\n", False),
        ("pyproject.toml", "[tool.prefect.api]\nurl = 'http://127.0.0.1:4200/api'\n", True),
        ("home/profiles.toml", 'active = "ephemeral"\n[profiles.ephemeral]\nX = "1"\n', True),
    ],
)
def test_where_prefect_settings_could_set_an_api_url(tmp_path, monkeypatch, where, text, maybe):
    from flows.runtime import _settings_sources_exist as _settings_may_set_api_url

    for name in ("PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    if where:
        write(tmp_path / where, text)
    assert _settings_may_set_api_url(tmp_path) is maybe
    monkeypatch.setenv("PREFECT_PROFILE", "local")  # a chosen profile may set one
    assert _settings_may_set_api_url(tmp_path) is True


@pytest.fixture
def batch_log():
    """The batch's log lines, whether or not the CLI's logging took the logger over."""
    import logging

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    logger = logging.getLogger("llm_conductor.batch")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def latest_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            )
            return sorted(found, key=lambda a: a.created)[-1]

    artifact = asyncio.run(read())
    return json.loads(artifact.data) if key == "batch-prompts" else artifact.data


@both_modes
def test_answers_served_from_the_cache_are_reported_as_cached_without_cost(
    llm_server, dirs, task_per_prompt, batch_log
):
    """Outputs deleted, same prompts again: the answer cache serves them (0 calls), and no
    token, cost or model time is reported for them a second time."""
    src, out = dirs
    llm_server.latency = 0.2
    write(src / "a.md.prompt.md", "first prompt")
    write(src / "b.md.prompt.md", "second prompt")
    llm = provider(llm_server, model="gpt-4o-mini")  # a model with a price: cost is known
    first = run_batch(llm, src, out, task_per_prompt=task_per_prompt)
    assert first.ok == 2 and first.cost > 0 and first.prompt_tokens > 0
    (out / "a.md").unlink()
    (out / "b.md").unlink()
    llm_server.reset()
    batch_log.clear()

    again = run_batch(llm, src, out, task_per_prompt=task_per_prompt)
    assert llm_server.requests == []
    assert (again.ok, again.cached, again.failed) == (2, 2, 0)
    assert (again.prompt_tokens, again.completion_tokens, again.cost) == (0, 0, 0.0)
    assert again.cost_known and "2 ok (2 cached)" in again.line()
    assert "0 tokens, $0.0000" in again.line()
    assert (out / "a.md").read_text().endswith("echo: first prompt")
    for entry in Manifest.open(out).entries():
        assert entry.cached and entry.status == "ok"
        assert (entry.prompt_tokens, entry.completion_tokens, entry.cost) == (0, 0, 0.0)
    lines = [line for line in batch_log if line.startswith("ok ")]
    assert sorted(line.rsplit(" [", 1)[0] for line in lines) == [
        "ok a.md.prompt.md (cached, no cost)",
        "ok b.md.prompt.md (cached, no cost)",
    ]
    assert sorted(counters(lines)) == [(1, 2), (2, 2)]
    rows = latest_artifact("batch-prompts")
    assert {
        (r["file"], r["cached"], r["prompt_tokens"], r["cost"], r["seconds"]) for r in rows
    } == {
        ("a.md.prompt.md", True, 0, 0.0, 0.0),
        ("b.md.prompt.md", True, 0, 0.0, 0.0),
    }
    assert "| Of which cached (no cost) | 2 |" in latest_artifact("batch-summary")


def counters(lines: list[str]) -> list[tuple[int, int]]:
    import re

    return [
        tuple(map(int, m.groups())) for line in lines if (m := re.search(r"\[(\d+)/(\d+)\]$", line))
    ]


def test_progress_counts_problem_files_and_never_passes_the_total(
    llm_server, dirs, tmp_path, batch_log
):
    """Every file prompt_files.py rejects is one step of [n/N]: never [2/1] or 200 %."""
    src, out = dirs
    write(src / "ok.prompt.md", "fine")
    write(src / "empty.prompt.md", "  \n\t\n")
    write(src / "latin1.prompt.md", "caf\xe9".encode("latin-1"))
    (src / "link.prompt.md").symlink_to(write(tmp_path / "elsewhere.prompt.md", "outside"))
    (src / "broken.prompt.md").symlink_to(src / "missing-target")
    write(src / "same.prompt.md", "auto format, writes same.md")
    write(src / "same.md.prompt.md", "explicit md, writes same.md too")
    summary = run_batch(provider(llm_server), src, out)
    assert (summary.ok, summary.failed) == (2, 5)
    steps = counters(batch_log)
    assert sorted(steps) == [(n, 7) for n in range(1, 8)], batch_log
    assert float(latest_artifact("batch-progress")) == 100.0

    batch_log.clear()  # the good ones are up to date now: only the problems are counted
    again = run_batch(provider(llm_server), src, out)
    assert (again.up_to_date, again.failed) == (2, 5)
    assert sorted(counters(batch_log)) == [(n, 5) for n in range(1, 6)], batch_log
    assert float(latest_artifact("batch-progress")) == 100.0


def test_tokens_of_rejected_answers_count_everywhere(llm_server, dirs, batch_log):
    """A `.json` prompt whose answer holds no JSON was paid for: its tokens and cost are in
    the manifest, the summary, the artifacts and what --max-cost compares with."""
    src, out = dirs
    llm_server.reply = "Sorry, I found no data for this, so the result is {} for now."
    write(src / "a.json.prompt.md", "give me json about a")
    write(src / "b.json.prompt.md", "give me json about b")
    llm = provider(llm_server, model="gpt-4o-mini")
    summary = run_batch(llm, src, out, parallelism=1, max_cost=1e-9)
    assert (summary.failed, summary.not_started, len(llm_server.requests)) == (1, 1, 1)
    usage = llm_server.requests[0]  # what the server billed
    del usage
    assert summary.prompt_tokens > 0 and summary.completion_tokens > 0 and summary.cost > 0
    (entry,) = [e for e in Manifest.open(out).entries() if e.status == "failed"]
    assert (entry.prompt_tokens, entry.completion_tokens) == (
        summary.prompt_tokens,
        summary.completion_tokens,
    )
    assert entry.cost == pytest.approx(summary.cost) and entry.attempts == 1
    (row,) = [r for r in latest_artifact("batch-prompts") if r["status"] == "failed"]
    assert row["completion_tokens"] == summary.completion_tokens and row["cost"] > 0
    assert any("tokens paid)" in line for line in batch_log)


def test_outputs_carry_the_seeds_metadata_keys_and_when_they_were_generated(llm_server, dirs):
    """Scripts written for the seed read these keys of ``_llm_metadata``; ours stay too."""
    from datetime import UTC, datetime, timedelta

    src, out = dirs
    llm_server.reply = reply_json_or_text
    write(src / "a.json.prompt.md", "prompt a as json")
    write(src / "b.md.prompt.md", "prompt b")
    before = datetime.now(UTC)
    run_batch(provider(llm_server, model="gpt-4o-mini", temperature=0.3), src, out)
    as_json = json.loads((out / "a.json").read_text())["_llm_metadata"]
    header = (out / "b.md").read_text().splitlines()[1]
    as_text = json.loads(header.removeprefix("<!-- LLM Metadata: ").removesuffix(" -->"))
    for meta in (as_json, as_text):
        assert meta["temperature"] == 0.3
        assert meta["total_tokens"] == meta["prompt_tokens"] + meta["completion_tokens"] > 0
        assert meta["elapsed_seconds"] == round(meta["elapsed"], 2)
        generated = datetime.fromisoformat(meta["generation_date"])
        assert generated.utcoffset() == timedelta(0)
        assert before <= generated <= datetime.now(UTC)
        assert meta["generation_id"] == meta["response_id"] and meta["generation_id"]
        assert meta["cost_usd"] == meta["cost"] > 0
        assert meta["cost_calculation_method"] == "litellm_actual"
        assert meta["provider"] == "openai" and meta["model"] == "gpt-4o-mini"


def test_debug_detail_stays_off_prefects_api(llm_server, dirs):
    """The log file's per-prompt DEBUG lines are not stored by Prefect (a row each); the
    INFO lines still reach the flow run's logs."""
    import logging

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    src, out = dirs
    write(src / "a.prompt.md", "api logs prompt")
    ours = logging.getLogger("llm_conductor")
    level = ours.level
    ours.setLevel(logging.DEBUG)
    try:
        run_batch(provider(llm_server), src, out)
    finally:
        ours.setLevel(level)

    async def messages() -> list[str]:
        async with get_client() as client:
            [latest] = await client.read_flow_runs(sort="START_TIME_DESC", limit=1)
            flow_run = LogFilterFlowRunId(any_=[latest.id])
            for _ in range(600):  # logs reach the API in batches, shortly after the run
                logs = await client.read_logs(log_filter=LogFilter(flow_run_id=flow_run))
                if any(log.message.startswith("ok a.prompt.md") for log in logs):
                    break
                await asyncio.sleep(0.1)
            return [log.message for log in logs]

    found = asyncio.run(messages())
    assert any(m.startswith("ok a.prompt.md") for m in found), found
    assert not any(m.startswith(("plan:", "a.prompt.md (new, key")) for m in found), found


def continued_reply(body) -> str:
    """A different text per continuation, as a model that does continue writes."""
    n = sum(m["role"] == "assistant" for m in body["messages"])
    return " ".join(f"part{n}-word{i}" for i in range(6))


def test_a_truncated_answer_fails_is_kept_and_retried(llm_server, dirs):
    src, out = dirs
    write(src / "long.prompt.md", "write a lot")
    llm_server.reply = continued_reply
    llm_server.length_rounds = 100  # every segment ends at the token limit
    summary = run_batch(provider(llm_server, max_continuations=1), src, out)
    assert (summary.ok, summary.failed, summary.exit_code) == (0, 1, 1)
    assert not (out / "long.md").exists() and not (out / "long.json").exists()
    kept = out / ".llm-conductor/rejected/long.prompt.md.txt"
    assert kept.read_text().startswith("part0-word0") and "part1-" in kept.read_text()
    entry = Manifest.open(out).get("long.prompt.md")
    assert entry.status == "failed" and "truncated after 1 continuations" in entry.error
    # Nothing was written as ok, so a plain rerun asks again, and so does --retry-errors.
    llm_server.reset()
    llm_server.reply = "short and complete"
    retried = run_batch(provider(llm_server, max_continuations=1), src, out, retry_errors=True)
    assert retried.exit_code == 0 and len(llm_server.requests) == 1
    assert (out / "long.md").read_text().endswith("short and complete")


def test_an_accepted_truncated_answer_is_written_and_marked(llm_server, dirs):
    src, out = dirs
    write(src / "long.prompt.md", "write a lot")
    llm_server.reply = continued_reply
    llm_server.length_rounds = 100
    accepting = provider(llm_server, max_continuations=1, accept_truncated=True)
    assert run_batch(accepting, src, out).exit_code == 0
    header = (out / "long.md").read_text().splitlines()[1]
    metadata = json.loads(header.removeprefix("<!-- LLM Metadata: ").removesuffix(" -->"))
    assert metadata["truncated"] is True and metadata["finish_reason"] == "length"
    entry = Manifest.open(out).get("long.prompt.md")
    assert entry.status == "ok" and entry.truncated
    line = (out / ".llm-conductor/manifest.jsonl").read_text()
    assert '"truncated":true' in line
