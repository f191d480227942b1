"""The original llm-conductor's Python API keeps working."""

from __future__ import annotations

import pytest

from llm_conductor import get_provider, run_batch_mode


@pytest.mark.asyncio
async def test_get_provider_run_and_async_run(llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-seed")
    llm_server.reply = "seed answer"
    provider = get_provider("openai", model_name="gpt-4o-mini")
    content, usage, generation_id = await provider.async_run("hi")
    assert content == "seed answer"
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["cost"] > 0
    assert generation_id and generation_id.startswith("chatcmpl")


def test_sync_run_streams_nothing_and_returns_text():
    provider = get_provider("random", model_name="random")
    assert provider.run("a list of birds").startswith("1. ")


def test_run_batch_mode_returns_exit_codes(tmp_path, prefect_harness):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.prompt.md").write_text("a list of things")
    provider = get_provider("random")
    assert run_batch_mode(provider, 2, False, False, src, out, False) == 0
    assert (out / "a.md").exists()
    assert run_batch_mode(provider, 0, False, False, src, out, False) == 2
    (src / "b.prompt.md").write_text("   ")
    assert run_batch_mode(provider, 2, False, False, src, out, False) == 1
