"""The batch command as a real process: kill -9 and Ctrl-C in the middle, then the same command."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Each test starts real processes (CLI runs, Prefect APIs): more than the default 120 s
# on a busy 2-core machine, and its own waits are sized for that.
pytestmark = pytest.mark.timeout(360)

CLI = str(Path(sys.executable).parent / "llm-conductor")
N = 30


@pytest.fixture(params=[[], ["--task-per-worker"]], ids=["task-per-prompt", "task-per-worker"])
def job(request, tmp_path, llm_server):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(N):
        (src / f"p{i:02}.md.prompt.md").write_text(f"prompt number {i}")
    llm_server.latency = 0.4
    env = {
        **os.environ,
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "sk-x",
        "LITELLM_TIMEOUT": "10",
    }
    argv = [
        CLI,
        "batch",
        "-p",
        "openai",
        "-m",
        "m",
        "-j",
        "3",
        "--input-dir",
        str(src),
        "--output-dir",
        str(out),
        *request.param,
    ]
    return argv, env, out


def outputs(out: Path) -> list[Path]:
    return sorted(out.glob("*.md"))


def start_and_wait_for(argv, env, out: Path, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        argv,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while len(outputs(out)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.05)
    return process


def requests_per_prompt(server) -> collections.Counter[str]:
    return collections.Counter(r.json["messages"][0]["content"] for r in server.requests)


def test_kill_9_then_rerun_keeps_outputs_and_bills_nothing_twice(job, llm_server):
    argv, env, out = job
    process = start_and_wait_for(argv, env, out, 6)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survived = {p.name: p.read_text() for p in outputs(out)}
    assert 6 <= len(survived) < N

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert len(outputs(out)) == N
    for name, text in survived.items():
        assert (out / name).read_text() == text, "a finished output was rewritten"
    counts = requests_per_prompt(llm_server)
    for name in survived:
        prompt = f"prompt number {int(name[1:3])}"
        assert counts[prompt] == 1, f"{prompt} was billed {counts[prompt]} times"
    # Only prompts in flight at the kill (at most -j of them) can have been sent twice.
    assert sum(counts.values()) <= N + 3
    entries = [json.loads(line) for line in (out / ".llm-conductor/manifest.jsonl").open()]
    assert {e["relative"] for e in entries if e["status"] == "ok"} == {
        f"p{i:02}.md.prompt.md" for i in range(N)
    }


def test_ctrl_c_exits_130_and_keeps_what_finished(job, llm_server):
    argv, env, out = job
    process = start_and_wait_for(argv, env, out, 4)
    os.killpg(process.pid, signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    finished = outputs(out)
    assert len(finished) < N
    for path in finished:
        assert path.read_text().startswith("<!-- Prompt Hash: "), "no partial file"
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert len(outputs(out)) == N
