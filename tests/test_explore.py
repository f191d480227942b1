"""Topic exploration end to end: producers, dedup across them, routing, outputs, resume."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import flows.explore as explore
from blocks import UsageError
from flows.explore import run_exploration
from tasks.explore import ExploreSettings, default_output_dir
from tests.support.llm_server import LLMServer

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def servers(monkeypatch):
    """Three providers on three local servers: openai, openrouter and lmstudio kinds."""
    with LLMServer() as a, LLMServer() as b, LLMServer() as c:
        monkeypatch.setenv("OPENAI_BASE_URL", a.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-a")
        monkeypatch.setenv("OPENROUTER_BASE_URL", b.base_url)
        monkeypatch.setenv("OPENROUTER_API_KEY", "sk-b")
        monkeypatch.setenv("LMSTUDIO_BASE_URL", c.base_url)
        for server, name in ((a, "a"), (b, "b"), (c, "c")):
            server.reply = _numbered(name)
        yield a, b, c


def _numbered(name: str):
    counter = iter(range(10**6))

    def reply(body) -> str:
        n = next(counter)
        return "\n".join(f"{i}. {name} thing {n} {i}" for i in range(1, 4))

    return reply


def run(settings: ExploreSettings, out: Path, **kw):
    return asyncio.run(run_exploration(settings, out, **kw))


def settings(**kw) -> ExploreSettings:
    values = {"topic": "Paris", "producers": 2, "routing_config": "random:random", "seed": 1}
    values.update(kw)
    return ExploreSettings(**values)


def test_roundrobin_spreads_request_by_request(servers, tmp_path):
    a, b, c = servers
    cfg = "openai:m1,openrouter:m2,lmstudio:m3"
    summary = run(
        settings(routing_strategy="roundrobin", routing_config=cfg, iterations=12, producers=3),
        tmp_path,
    )
    assert summary.batches == 12
    assert [len(s.requests) for s in servers] == [4, 4, 4]


def test_weighted_follows_the_weights(servers, tmp_path):
    a, b, _ = servers
    summary = run(
        settings(
            routing_strategy="weighted",
            routing_config="openai:m1:3,openrouter:m2:1",
            iterations=80,
            producers=4,
            seed=7,
        ),
        tmp_path,
    )
    assert summary.batches == 80
    share = len(a.requests) / 80
    assert 0.6 < share < 0.9, share
    assert len(b.requests) > 0


def test_priority_fails_over_on_errors(servers, tmp_path):
    a, b, c = servers
    a.enqueue("500", times=1000)
    summary = run(
        settings(
            routing_strategy="priority",
            routing_config="openai:m1,openrouter:m2,lmstudio:m3",
            iterations=6,
            producers=1,
        ),
        tmp_path,
    )
    assert summary.batches == 6
    assert len(b.requests) == 6 and len(c.requests) == 0
    assert 1 <= len(a.requests) <= 2, "a failing first route sits out its cool-down"
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["providers"]["openai:m1"]["errors"] == {"ProviderUnavailable": len(a.requests)}


def test_backoff_retries_rate_limits(servers, tmp_path, monkeypatch):
    a, _, _ = servers
    monkeypatch.setattr(explore, "make_router", _fast(explore.make_router))
    a.enqueue("429", times=2)
    summary = run(
        settings(routing_strategy="backoff", routing_config="openai:m1", iterations=3, producers=1),
        tmp_path,
    )
    assert summary.batches == 3 and summary.exit_code == 0
    assert len(a.requests) == 5


def _fast(make_router):
    def fast(*args, **kwargs):
        return make_router(*args, **kwargs, base_delay=0.01)

    return fast


def test_auth_errors_are_not_rate_limits_and_stop_only_that_producer(servers, tmp_path):
    a, _, _ = servers
    a.enqueue("401", times=1000)
    summary = run(
        settings(
            routing_strategy="backoff", routing_config="openai:m1", iterations=50, producers=2
        ),
        tmp_path,
    )
    assert summary.batches == 0 and summary.producers_stopped == 2 and summary.exit_code == 1
    assert len(a.requests) == 2 * explore.MAX_CONSECUTIVE_FAILURES, "no backoff retries on 401"
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert set(meta["providers"]["openai:m1"]["errors"]) == {"AuthenticationFailed"}


def test_dedup_across_producers_keeps_first_spelling(servers, tmp_path):
    a, _, _ = servers
    a.reply = "1. Eiffel Tower\n2. the eiffel tower\n- Eiffel Towers\n* Louvre\n5. EIFFEL-TOWER!"
    summary = run(settings(routing_config="openai:m1", iterations=6, producers=3), tmp_path)
    assert (tmp_path / "output.txt").read_text() == "Eiffel Tower\nLouvre\n"
    assert summary.unique == 2 and summary.duplicate_rate == pytest.approx(28 / 30, abs=1e-3)
    data = json.loads((tmp_path / "output.json").read_text())
    first = data["attributes"][0]
    assert first["attribute"] == "Eiffel Tower" and first["provider"] == "openai"
    assert {"model", "producer", "timestamp"} <= set(first)


def test_producers_are_shown_what_is_known(servers, tmp_path):
    a, _, _ = servers
    run(settings(routing_config="openai:m1", iterations=3, producers=1), tmp_path)
    prompts = [r.json["messages"][0]["content"] for r in a.requests]
    assert "Do not repeat" not in prompts[0]
    assert "- a thing 0 1" in prompts[1] and "- a thing 1 3" in prompts[2]


def test_rerun_continues_and_fresh_keeps_the_old_files(tmp_path):
    first = run(settings(iterations=3), tmp_path)
    again = run(settings(iterations=3), tmp_path)
    assert again.unique > first.unique and again.new_this_run == again.unique - first.unique
    lines = (tmp_path / "output.txt").read_text().splitlines()
    assert len(lines) == len(set(lines)) == again.unique
    fresh = run(settings(iterations=1), tmp_path, fresh=True)
    assert fresh.unique == fresh.new_this_run
    [previous] = tmp_path.glob("previous-*")
    assert len((previous / "output.txt").read_text().splitlines()) == again.unique


def test_other_topic_in_the_folder_is_refused(tmp_path):
    run(settings(iterations=1), tmp_path)
    with pytest.raises(UsageError, match="holds the topic 'Paris'"):
        run(settings(topic="Rome", iterations=1), tmp_path)


def test_topic_cannot_escape_the_output_folder():
    assert default_output_dir("../../etc/passwd") == Path("output/etc-passwd")
    with pytest.raises(UsageError):
        default_output_dir("../..")


@pytest.mark.parametrize(
    ("config", "strategy", "message"),
    [
        ("openai", "backoff", "provider:model"),
        ("nosuch:m", "backoff", "valid"),
        ("openai:m:0", "weighted", "weight"),
        ("openai:m,openrouter:n", "backoff", "backoff"),
        ("random:random", "fastest", "roundrobin"),
    ],
)
def test_bad_routing_is_a_usage_error(config, strategy, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        run(settings(routing_config=config, routing_strategy=strategy, iterations=1), tmp_path)
    assert not (tmp_path / "metadata.json").exists()


def test_a_crashed_producer_does_not_stop_the_others(tmp_path, monkeypatch):
    real = explore.build_prompt

    def flaky(topic, known, total, producer, request):
        if producer == 0:
            raise RuntimeError("boom")
        return real(topic, known, total, producer, request)

    monkeypatch.setattr(explore, "build_prompt", flaky)
    summary = run(settings(iterations=5, producers=3), tmp_path)
    assert summary.batches == 5 and summary.producers_stopped == 1 and summary.exit_code == 1
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["producers"]["0"]["crashed"] == "RuntimeError: boom"


def test_cancellation_flushes_every_output(tmp_path):
    async def go():
        task = asyncio.create_task(
            run_exploration(settings(producers=2, routing_config="random:random"), tmp_path)
        )
        while (
            not (tmp_path / "attributes.jsonl").exists()
            or (tmp_path / "attributes.jsonl").stat().st_size < 2000
        ):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    journal = [json.loads(x) for x in (tmp_path / "attributes.jsonl").read_text().splitlines()]
    data = json.loads((tmp_path / "output.json").read_text())
    assert [r["attribute"] for r in data["attributes"]] == [r["attribute"] for r in journal]
    assert (tmp_path / "output.txt").read_text().splitlines() == [r["attribute"] for r in journal]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["metrics"]["unique"] == len(journal)


def test_max_requests_per_producer(servers, tmp_path):
    a, _, _ = servers
    summary = run(settings(routing_config="openai:m1", max_requests=3, producers=2), tmp_path)
    assert summary.requests == 6 and len(a.requests) == 6
    per_producer = collections.Counter(
        r["producer"] for r in json.loads((tmp_path / "output.json").read_text())["attributes"]
    )
    assert set(per_producer) == {0, 1}


def test_a_stopped_flow_run_leaves_its_requests_cancelled_not_crashed(monkeypatch, tmp_path):
    from prefect.exceptions import CancelledRun

    from tests.support.prefect_runs import latest_flow_run_state, latest_task_runs

    with LLMServer() as server:
        server.latency = 60  # both producers' requests are in flight when the run is stopped
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-a")

        async def go() -> list[tuple[str, str]]:
            run = asyncio.create_task(
                explore.explore_topic(
                    topic="Paris", producers=2, routing_config="openai:m1", output=str(tmp_path)
                )
            )
            while server.in_flight < 2:
                assert not run.done(), run
                await asyncio.sleep(0.02)
            run.cancel()
            with pytest.raises(CancelledRun):  # the flow run itself ended Cancelled
                await run
            return await latest_task_runs(2)

        runs = asyncio.run(go())
    assert runs == [("ask openai", "CANCELLED")] * 2
    assert asyncio.run(latest_flow_run_state()) == "CANCELLED"
    assert json.loads((tmp_path / "metadata.json").read_text())["topic"] == "Paris", "flushed"


# --------------------------------------------------------------------------------------------
# What a weak model answers: junk is rejected, counted, and never shown to the model again
# --------------------------------------------------------------------------------------------

JUNK = [
    "Here are some attractions:",
    "Topic: Paris",
    "Reply with a numbered list, one short attribute per line, nothing else.",
    "The Louvre is the most visited museum in the world.",
    "42",
]


def test_junk_is_rejected_counted_and_never_shown_to_the_model(servers, tmp_path):
    a, _, _ = servers
    counter = iter(range(10**6))

    def reply(body) -> str:
        n = next(counter)
        return "\n".join([JUNK[0], JUNK[1], JUNK[2], f"1. Sight {n}", JUNK[3], f"2. Park {n}"])

    a.reply = reply
    summary = run(settings(routing_config="openai:m1", iterations=3, producers=1), tmp_path)
    prompts = [r.json["messages"][0]["content"] for r in a.requests]
    assert "- Sight 0" in prompts[1] and "- Park 1" in prompts[2]
    known = [line for p in prompts for line in p.splitlines() if line.startswith("- ")]
    assert not [line for line in known if line[2:] in JUNK]
    assert (tmp_path / "output.txt").read_text().split("\n")[:2] == ["Sight 0", "Park 0"]
    expected = {"echo": 6, "sentence": 6}
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["rejected"] == meta["metrics"]["rejected"] == expected
    assert summary.rejected == expected
    assert "rejected 12 lines (echo 6, sentence 6)" in summary.line()


def test_junk_kept_by_an_older_run_is_not_shown_to_the_model(servers, tmp_path):
    a, _, _ = servers
    old = ["Eiffel Tower", *JUNK[1:], "Louvre"]
    (tmp_path / "attributes.jsonl").write_text(
        "".join(json.dumps({"attribute": text}) + "\n" for text in old)
    )
    run(settings(routing_config="openai:m1", iterations=1, producers=1), tmp_path)
    known = [line for line in a.requests[0].json["messages"][0]["content"].splitlines()]
    assert "- Eiffel Tower" in known and "- Louvre" in known
    assert not [line for line in known if line[2:] in JUNK]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["rejected"] == {"echo": 2, "number": 1, "sentence": 1}


def test_a_list_cut_at_max_tokens_is_read_as_is_never_continued(servers, tmp_path):
    a, _, _ = servers
    a.reply = "1. Eiffel Tower\n2. Louvre\n3. Notre Dame Cathedral\n4. Sainte-Chapelle"
    a.length_rounds = 1  # the server cuts the first answer halfway, finish_reason "length"
    summary = run(
        settings(routing_config="openai:m1", iterations=2, producers=1, max_tokens=77), tmp_path
    )
    assert len(a.requests) == 2, "one request per batch: no continuation"
    assert [r.json["max_tokens"] for r in a.requests] == [77, 77]
    assert summary.rejected == {"unfinished": 1}
    assert (tmp_path / "output.txt").read_text().splitlines() == [
        "Eiffel Tower",
        "Louvre",
        "Notre Dame Cathedral",
        "Sainte-Chapelle",
    ]


def test_max_tokens_default_is_sized_for_the_list_and_zero_is_the_providers(servers, tmp_path):
    from tasks.explore import DEFAULT_MAX_TOKENS, PER_REQUEST

    a, _, _ = servers
    run(settings(routing_config="openai:m1", iterations=1, producers=1), tmp_path / "one")
    assert a.requests[-1].json["max_tokens"] == DEFAULT_MAX_TOKENS <= 40 * PER_REQUEST
    run(
        settings(routing_config="openai:m1", iterations=1, producers=1, max_tokens=None),
        tmp_path / "two",
    )
    assert "max_tokens" not in a.requests[-1].json
    with pytest.raises(UsageError, match="--max-tokens must be at least 1"):
        settings(max_tokens=0).check()
    with pytest.raises(UsageError, match="--max-words must be at least 1"):
        settings(max_words=0).check()


# --------------------------------------------------------------------------------------------
# The topic folder: one run at a time, and a torn journal line
# --------------------------------------------------------------------------------------------


def test_a_torn_last_journal_line_does_not_swallow_the_next_record(servers, tmp_path):
    a, _, _ = servers
    a.reply = "1. Louvre"
    journal = tmp_path / "attributes.jsonl"
    journal.write_text(json.dumps({"attribute": "Eiffel Tower"}) + '\n{"attribute": "Notre Da')
    run(settings(routing_config="openai:m1", iterations=1, producers=1), tmp_path)
    records = [json.loads(line) for line in journal.read_text().splitlines()[2:]]
    assert [r["attribute"] for r in records] == ["Louvre"]
    # The next run reads every whole record back.
    a.reply = "1. Louvre\n2. Orsay"
    again = run(settings(routing_config="openai:m1", iterations=1, producers=1), tmp_path)
    assert again.unique == 3
    assert (tmp_path / "output.txt").read_text().splitlines() == ["Eiffel Tower", "Louvre", "Orsay"]


def test_a_second_run_in_this_process_on_the_same_folder_is_refused(servers, tmp_path):
    from tasks.explore import explore_lock

    a, _, _ = servers
    with explore_lock(tmp_path):
        pass  # taken and released

    async def both():
        a.latency = 0.5
        first = asyncio.create_task(
            run_exploration(
                settings(routing_config="openai:m1", iterations=2, producers=1), tmp_path
            )
        )
        while not a.in_flight:
            assert not first.done(), first
            await asyncio.sleep(0.01)
        async with asyncio.timeout(60):
            with pytest.raises(UsageError, match="in use by another explore run"):
                await asyncio.create_task(
                    run_exploration(settings(routing_config="openai:m1", iterations=1), tmp_path)
                )
        return await first

    summary = asyncio.run(both())
    assert summary.batches == 2 and len(a.requests) == 2


# --------------------------------------------------------------------------------------------
# Semantic dedup (optional): one embeddings request per answer, each attribute embedded once
# --------------------------------------------------------------------------------------------

MEANINGS = {"arc de triomphe": 0, "triumphal arch": 0, "louvre": 1, "orsay": 2, "pantheon": 3}


def _by_meaning(text: str) -> list[float]:
    vector = [0.0] * 8
    vector[MEANINGS.get(text.casefold(), 7)] = 1.0
    return vector


def _answers(*answers: str):
    queue = iter(answers)
    return lambda body: next(queue)


def test_semantic_dedup_is_off_by_default(servers, tmp_path):
    a, _, _ = servers
    a.embed = _by_meaning
    a.reply = _answers("1. Arc de Triomphe\n2. Louvre", "1. Triumphal Arch\n2. Orsay")
    run(settings(routing_config="openai:m1", iterations=2, producers=1), tmp_path)
    assert [r.api for r in a.requests] == ["openai", "openai"]
    assert "Triumphal Arch" in (tmp_path / "output.txt").read_text()


def test_semantic_dedup_batches_per_answer_and_caches_per_attribute(servers, tmp_path):
    a, _, _ = servers
    a.embed = _by_meaning
    a.reply = _answers(
        "1. Arc de Triomphe\n2. Louvre",
        "1. Triumphal Arch\n2. Orsay\n3. Louvre",
        "1. the Louvre\n2. Orsay",  # strings see these: no embeddings request at all
        "1. Triumphal Arch",  # embedded once already
    )
    semantic = {"semantic_model": "openai:emb", "semantic_threshold": 0.95}
    summary = run(
        settings(routing_config="openai:m1", iterations=4, producers=1, **semantic), tmp_path
    )
    assert (tmp_path / "output.txt").read_text().splitlines() == [
        "Arc de Triomphe",
        "Louvre",
        "Orsay",
    ]
    embeddings = [r.json for r in a.requests if r.api == "embeddings"]
    assert [e["input"] for e in embeddings] == [
        ["Arc de Triomphe", "Louvre"],
        ["Triumphal Arch", "Orsay"],
    ]
    assert {e["model"] for e in embeddings} == {"emb"}
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["metrics"]["semantic_duplicates"] == 2 and summary.unique == 3

    # A rerun embeds what is known once, in one batch, then only what is new.
    a.reply = _answers("1. Pantheon\n2. Triumphal Arch")
    run(settings(routing_config="openai:m1", iterations=1, producers=1, **semantic), tmp_path)
    embeddings = [r.json["input"] for r in a.requests if r.api == "embeddings"][2:]
    assert embeddings == [["Arc de Triomphe", "Louvre", "Orsay"], ["Pantheon", "Triumphal Arch"]]
    assert (tmp_path / "output.txt").read_text().splitlines()[-1] == "Pantheon"


def test_a_failed_embeddings_call_only_skips_the_check(servers, tmp_path):
    a, _, _ = servers
    a.embed = lambda text: []  # a broken server: zero-length vectors
    a.reply = _answers("1. Arc de Triomphe", "1. Triumphal Arch")
    summary = run(
        settings(routing_config="openai:m1", iterations=2, producers=1, semantic_model="openai:e"),
        tmp_path,
    )
    assert summary.batches == 2 and summary.unique == 2


def test_semantic_model_is_checked_before_any_request(servers, tmp_path):
    a, _, _ = servers
    with pytest.raises(UsageError, match="provider:model"):
        run(settings(routing_config="openai:m1", iterations=1, semantic_model="emb"), tmp_path)
    with pytest.raises(UsageError, match="no embeddings API"):
        run(settings(routing_config="openai:m1", iterations=1, semantic_model="random:x"), tmp_path)
    with pytest.raises(UsageError, match="semantic-threshold"):
        settings(semantic_threshold=1.5).check()
    assert a.requests == []


def test_unknown_cost_is_said_not_printed_as_zero(servers, tmp_path):
    # "m1" has no price in litellm's map: the answers' cost is unknown, not $0.
    summary = run(settings(routing_config="openai:m1", iterations=2, producers=1), tmp_path)
    assert summary.batches == 2 and not summary.cost_known
    assert "cost unknown" in summary.line() and "$0.0000" not in summary.line()
    priced = run(settings(routing_config="random:random", iterations=1), tmp_path / "priced")
    assert priced.cost_known and "$0.0000" in priced.line()


def test_ctrl_c_ends_the_explore_flow_run_cancelled(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from tests.support.prefect_runs import latest_flow_run_state

    cli = str(Path(sys.executable).parent / "llm-conductor")
    command = [cli, "explore", "-t", "Ctrl-C", "--routing-config", "random:random"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    journal = tmp_path / "out" / "attributes.jsonl"
    process = subprocess.Popen(
        [*command, "--producers", "2", "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not journal.exists() or journal.stat().st_size < 2000:
            assert process.poll() is None and time.monotonic() < deadline, process.poll()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Crash" not in stderr, stderr
    assert asyncio.run(latest_flow_run_state()) == "CANCELLED"
