"""``--json`` on run, batch, explore and list: one JSON document on stdout, nothing else,
with the keys README's "Machine-readable output" documents. Real ``llm-conductor`` processes
against the local OpenAI-compatible server; batch and explore as flow runs in the session's
Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(360)

ROOT = Path(__file__).resolve().parent.parent
PROMPT_KEYS = {
    "file",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "seconds",
    "attempts",
    "retries",
    "error",
    "cached",
    "usage_estimated",
}


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, Any, str]:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.count("\n") <= 1, f"more than one line on stdout:\n{done.stdout}"
    document = json.loads(done.stdout) if done.stdout else None
    return done.returncode, document, done.stderr


def harness_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def server_env(server: Any) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-json"}


def test_run_json_is_the_answer_usage_cost_and_finish_reason(llm_server) -> None:
    llm_server.reply = "four words of answer"
    llm_server.enqueue(429, retry_after=0.01)
    code, document, stderr = cli(
        "run",
        "-p",
        "openai",
        "-m",
        "json-model",
        "--prompt",
        "hi",
        "--json",
        env=server_env(llm_server),
    )
    assert code == 0, stderr
    varying = {key: document.pop(key) for key in ("cost", "response_id", "elapsed_seconds")}
    assert document == {
        "schema": "llm-conductor.run.v1",
        "answer": "four words of answer",
        "provider": "openai",
        "model": "json-model",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
        "attempts": 2,
        "segments": 1,
    }
    assert varying["response_id"] and varying["elapsed_seconds"] > 0
    assert varying["cost"] is None, "litellm has no price for this model"


@pytest.mark.usefixtures("prefect_harness")
def test_batch_json_is_the_summary_and_each_prompt(llm_server, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.md.prompt.md").write_text("first")
    (src / "b.md.prompt.md").write_text("second")
    llm_server.enqueue(400)  # one at a time, in name order: a fails
    code, document, stderr = cli(
        "batch",
        "-i",
        str(src),
        "-o",
        str(tmp_path / "out"),
        "-p",
        "openai",
        "-j",
        "1",
        "--json",
        env={**server_env(llm_server), "PREFECT_API_URL": harness_url()},
    )
    assert code == 1, stderr
    assert document["schema"] == "llm-conductor.batch.v1"
    summary = document["summary"]
    assert (summary["total"], summary["ok"], summary["failed"], summary["exit_code"]) == (
        2,
        1,
        1,
        1,
    )
    assert set(summary) >= {"up_to_date", "not_started", "cost", "cost_known", "retries"}
    prompts = sorted(document["prompts"], key=lambda p: p["file"])
    assert [set(p) for p in prompts] == [PROMPT_KEYS, PROMPT_KEYS]
    assert [(p["file"], p["status"]) for p in prompts] == [
        ("a.md.prompt.md", "failed"),
        ("b.md.prompt.md", "ok"),
    ]
    assert "batch: 2 prompts" in stderr, "the summary line stays on stderr"


def test_a_usage_error_prints_no_json() -> None:
    code, document, stderr = cli("batch", "--dry-run", "--json")
    assert (code, document) == (2, None)
    assert stderr.startswith("Error: --json does not apply to --dry-run")


@pytest.mark.usefixtures("prefect_harness")
def test_explore_json_is_its_summary(tmp_path) -> None:
    code, document, stderr = cli(
        "explore",
        "-t",
        "rivers",
        "--routing-config",
        "random:random",
        "--producers",
        "1",
        "--iterations",
        "2",
        "-o",
        str(tmp_path / "rivers"),
        "--json",
        env={"PREFECT_API_URL": harness_url()},
    )
    assert code == 0, stderr
    assert document["schema"] == "llm-conductor.explore.v1"
    assert document["topic"] == "rivers" and document["batches"] == 2
    assert document["exit_code"] == 0
    assert set(document) >= {"unique", "new_this_run", "requests", "failures", "cost"}


def test_list_json_has_every_provider() -> None:
    from blocks.providers import PROVIDERS

    code, document, stderr = cli("list", "--json", env={"OPENAI_API_KEY": "sk-set"})
    assert code == 0, stderr
    assert document["schema"] == "llm-conductor.list.v1"
    assert [p["name"] for p in document["providers"]] == list(PROVIDERS)
    openai = document["providers"][0]
    assert openai == {
        "name": "openai",
        "default_model": "gpt-4o-mini",
        "parallelism": 32,
        "needs": "OPENAI_API_KEY",
        "ready": True,
    }
