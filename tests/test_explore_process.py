"""Two explore commands on one topic folder, as real processes: the second is refused at
once, naming the first, before it starts any Prefect API; the first is unharmed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Real CLI runs with their own Prefect API: more than the default 120 s on a busy machine.
pytestmark = pytest.mark.timeout(360)

CLI = str(Path(sys.executable).parent / "llm-conductor")


def test_a_second_explore_on_the_same_topic_folder_is_refused(llm_server, tmp_path):
    llm_server.latency = 0.2
    counter = iter(range(10**6))
    llm_server.reply = lambda body: "\n".join(f"{i}. Sight {next(counter)}" for i in range(1, 4))
    out = tmp_path / "paris"
    env = {
        **os.environ,
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "sk-x",
        "LITELLM_TIMEOUT": "30",
    }
    argv = [CLI, "explore", "-t", "Paris", "--routing-config", "openai:m", "-o", str(out)]
    first = subprocess.Popen(
        [*argv, "--producers", "1", "--iterations", "4"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        lock = out / ".llm-conductor" / "lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        started = lock.read_text().split()[2]

        # Its own Prefect home: a second run that started a Prefect API would create a DB.
        second_home = tmp_path / "second-prefect"
        second = subprocess.run(
            [*argv, "--producers", "3", "--iterations", "4"],
            env={**env, "PREFECT_HOME": str(second_home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"Error: topic folder {out} is in use by another explore run (pid {first.pid} on "
            f"{socket.gethostname()}, started {started}); wait for it to finish or stop it, or "
            "choose another --output"
        )
        assert not list(second_home.rglob("*.db")), "the refused run started a Prefect API"

        _, stderr = first.communicate(timeout=240)
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    journal = [json.loads(line) for line in (out / "attributes.jsonl").read_text().splitlines()]
    assert len(journal) == 12 and len(llm_server.requests) == 4, "no request paid twice"
    lines = (out / "output.txt").read_text().splitlines()
    assert lines == [r["attribute"] for r in journal] and len(set(lines)) == 12


def test_each_rate_limit_is_one_line_on_stderr(llm_server, tmp_path):
    llm_server.reply = "1. Eiffel Tower\n2. Louvre"
    llm_server.enqueue("429", times=3)
    env = {**os.environ, "OPENAI_BASE_URL": llm_server.base_url, "OPENAI_API_KEY": "sk-x"}
    argv = [CLI, "explore", "-t", "Paris", "--routing-config", "openai:m", "-o", str(tmp_path)]
    done = subprocess.run(
        [*argv, "--producers", "1", "--iterations", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert len(llm_server.requests) == 4
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "rate limited" in line]
    assert len(lines) == 3, done.stderr
    assert all("RateLimited: openai: rate limited: Rate limit reached" in x for x in lines)


def test_explore_help_states_the_real_defaults():
    from tasks.attributes import MAX_WORDS
    from tasks.explore import DEFAULT_MAX_TOKENS, PER_REQUEST
    from tasks.semantic import DEFAULT_SEMANTIC_THRESHOLD

    done = subprocess.run(
        [CLI, "explore", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    help_text = " ".join(done.stdout.split())
    assert f"[default: {DEFAULT_MAX_TOKENS}, sized for the {PER_REQUEST} short lines" in help_text
    assert f"not attributes [default: {MAX_WORDS}]" in help_text
    assert f"one meaning [default: {DEFAULT_SEMANTIC_THRESHOLD}]" in help_text
