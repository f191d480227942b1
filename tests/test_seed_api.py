"""The original llm-conductor's Python API keeps working, called the way its scripts call it."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from llm_conductor import get_provider, run_batch_mode, run_single_mode


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


def test_get_provider_positionally_with_reasoning_reaches_the_model(fake_cli_path):
    """The seed's ``get_provider(name, model_name, reasoning)``: reasoning is not dropped."""
    fake_cli_path.set_reply("codex answer")
    provider = get_provider("openai-codex", "gpt-5-codex", "high")
    assert provider.run("think hard") == "codex answer"
    (entry,) = fake_cli_path.log_entries()
    assert entry["tool"] == "codex"
    assert 'model_reasoning_effort="high"' in entry["argv"]
    assert entry["argv"][entry["argv"].index("-m") + 1] == "gpt-5-codex"


def test_an_unknown_provider_is_a_value_error_as_in_the_seed():
    try:
        get_provider("no-such-provider")
    except ValueError as error:  # what the seed's scripts catch
        message = str(error)
    else:
        pytest.fail("no error for an unknown provider")
    assert "no-such-provider" in message and "openai" in message


def test_run_single_mode_reads_stdin_the_seeds_way(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a list of birds"))
    assert run_single_mode(get_provider("random"), False) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. ") and out.endswith("\n")

    monkeypatch.setattr(sys, "stdin", io.StringIO("   \n"))
    assert run_single_mode(get_provider("random"), True) == 2


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_run_batch_mode_positionally_with_a_list_of_files(tmp_path, prefect_harness):
    """``run_batch_mode(provider, files, parallelism, verbose, force, input_dir, output_dir)``."""
    src, out = tmp_path / "in", tmp_path / "out"
    listed = write(src / "a.prompt.md", "a list of things")
    write(src / "b.prompt.md", "not listed")
    provider = get_provider("random")
    assert run_batch_mode(provider, [listed], 2, False, False, src, out) == 0
    assert (out / "a.md").exists() and not (out / "b.md").exists()
    assert run_batch_mode(provider, [listed], 0, False, False, src, out) == 2
    assert run_batch_mode(provider, [listed], 2, False, False, None, None) == 2
    (src / "c.prompt.md").write_text("   ")
    assert run_batch_mode(provider, [src / "c.prompt.md"], 2, False, False, src, out) == 1


def test_run_batch_mode_with_keywords_scans_the_input_dir(tmp_path, prefect_harness):
    """The seed README's keyword call, without a file list (and ``recursive``)."""
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "a.prompt.md", "a list of things")
    write(src / "sub/b.prompt.md", "a list of more things")
    exit_code = run_batch_mode(
        provider=get_provider("random"),
        parallelism=8,
        verbose=True,
        force=False,
        input_dir=src,
        output_dir=out,
        recursive=True,
    )
    assert exit_code == 0
    assert (out / "a.md").exists() and (out / "sub/b.md").exists()
