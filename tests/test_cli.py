"""The real `llm-conductor` command, run as a subprocess: stdout, stderr and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "llm-conductor")


def cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@pytest.fixture
def openai_env(llm_server) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "sk-cli-test-secret",
        "LITELLM_TIMEOUT": "5",
    }


def test_run_streams_only_the_answer_to_stdout(llm_server, openai_env, tmp_path):
    llm_server.reply = "alpha beta gamma delta"
    result = cli(
        "run", "--provider", "openai", "--model", "m", input="Tell me", env=openai_env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alpha beta gamma delta\n"
    assert "alpha" not in result.stderr
    [request] = llm_server.requests
    assert request.json["stream"] is True, "litellm providers stream"
    assert request.json["messages"][0]["content"] == "Tell me"
    log = tmp_path / ".local/logs/llm-conductor.log"
    assert not log.exists() or "sk-cli-test-secret" not in log.read_text()


@pytest.mark.parametrize("stream", [[], ["--no-stream"]], ids=["streamed", "at-the-end"])
def test_run_adds_a_final_newline_unless_raw(llm_server, openai_env, stream):
    llm_server.reply = "no newline at the end,\r\n  spaces and ünïcode  "
    plain = subprocess.run(
        [CLI, "run", "-p", "openai", "-m", "m", "--prompt", "hi", *stream],
        capture_output=True,
        timeout=120,
        env={**os.environ, **openai_env},
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "no newline at the end,\r\n  spaces and ünïcode  \n".encode()
    raw = subprocess.run(
        [CLI, "run", "-p", "openai", "-m", "m", "--prompt", "hi", "--raw", *stream],
        capture_output=True,
        timeout=120,
        env={**os.environ, **openai_env},
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == "no newline at the end,\r\n  spaces and ünïcode  ".encode()


def test_run_with_prompt_flag_and_offline_provider():
    result = cli("run", "-p", "random", "--prompt", "give me a list of squares")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1. ")


def test_provider_failure_exits_1_with_one_line(llm_server, openai_env):
    for _ in range(2):
        llm_server.enqueue("500")
    result = cli(
        "run", "-p", "openai", "--prompt", "x", env={**openai_env, "LITELLM_NUM_RETRIES": "1"}
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("Error: openai:")


@pytest.mark.parametrize(
    ("args", "stdin", "env", "message"),
    [
        (["run", "-p", "random"], "   \n", {}, "the prompt is empty"),
        (["run", "-p", "nosuch", "--prompt", "x"], None, {}, "valid providers: openai"),
        # (openai with OPENAI_BASE_URL set needs no key: a local server)
        (["run", "-p", "openrouter", "--prompt", "x"], None, {}, "set OPENROUTER_API_KEY"),
        (
            ["run", "-p", "random", "--reasoning", "max", "--prompt", "x"],
            None,
            {},
            "choose one of minimal, low, medium, high",
        ),
        (
            ["run", "-p", "random", "--prompt", "x"],
            None,
            {"LITELLM_TIMEOUT": "abc"},
            "LITELLM_TIMEOUT",
        ),
    ],
)
def test_usage_errors_exit_2_without_calling_a_provider(llm_server, args, stdin, env, message):
    result = cli(*args, input=stdin, env={"OPENAI_BASE_URL": llm_server.base_url, **env})
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert llm_server.requests == []


def test_list_shows_every_provider_and_requirements():
    result = cli("list", env={"OPENAI_API_KEY": "x"})
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) >= {
        "openai",
        "openrouter",
        "lmstudio",
        "ollama",
        "anthropic",
        "gemini",
        "claude-code",
        "openai-codex",
        "random",
    }
    assert "OPENAI_API_KEY" in lines["openai"] and lines["openai"].endswith("yes")
    assert lines["openrouter"].endswith("no")
    assert "32" in lines["openai"] and " 1 " in lines["lmstudio"] and " 4 " in lines["claude-code"]


def test_version_and_help_document_options_and_env():
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("llm-conductor ")
    top = cli("--help").stdout
    for env in ("MODEL_PROVIDER", "LITELLM_TIMEOUT", "LITELLM_APP_RETRIES", "PREFECT_API_URL"):
        assert env in top
    run_help = cli("run", "--help").stdout
    for option in ("--prompt", "--provider", "--model", "--reasoning", "--no-stream"):
        assert option in run_help


def test_python_module_entry_points():
    result = subprocess.run(
        [sys.executable, "-m", "flows.single", "-p", "random", "--prompt", "a list please"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1. ")


def test_explore_offline_writes_the_topic_folder(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.explore",
            "--topic",
            "Paris attractions",
            "--routing-config",
            "random:random",
            "--iterations",
            "4",
            "--producers",
            "2",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "output" / "paris-attractions"
    lines = (folder / "output.txt").read_text().splitlines()
    assert len(lines) == len(set(lines)) > 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"explore: {len(lines)} unique")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--routing-config", "openai:gpt-4o-mini"], {}, "set OPENAI_API_KEY"),
        (["--routing-config", "random"], {}, "provider:model"),
        (["--routing-strategy", "fastest"], {"ROUTING_CONFIG": "random:random"}, "roundrobin"),
        (["--producers", "0", "--routing-config", "random:random"], {}, "--producers"),
    ],
)
def test_explore_usage_errors_exit_2(tmp_path, args, env, message):
    result = cli("explore", "--topic", "x", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "output").exists()


def test_library_warnings_go_to_the_log_file_not_stderr(tmp_path):
    log = tmp_path / "run.log"
    code = (
        "import warnings; from flows.logs import configure_logging; configure_logging(); "
        "warnings.warn('coroutine was never awaited', RuntimeWarning)"
    )
    env = {**os.environ, "LLM_CONDUCTOR_LOG_FILE": str(log)}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "RuntimeWarning: coroutine was never awaited" in log.read_text()
    verbose = code.replace("configure_logging()", "configure_logging(verbose=True)")
    loud = subprocess.run([sys.executable, "-c", verbose], capture_output=True, text=True, env=env)
    assert "coroutine was never awaited" in loud.stderr


def test_the_log_file_holds_debug_lines_that_stderr_does_not(tmp_path):
    """The log file is DEBUG (per prompt: key, tokens, attempts, response id); stderr stays
    at INFO, and -v puts the same DEBUG lines there too."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.prompt.md").write_text("a list of rivers")
    (src / "b.json.prompt.md").write_text("rivers as json")
    log = tmp_path / "batch.log"
    args = ("batch", "-p", "random", "-i", str(src), "-o", str(tmp_path / "out"))
    quiet = cli(*args, env={"LLM_CONDUCTOR_LOG_FILE": str(log)}, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    debug = [line for line in log.read_text().splitlines() if " DEBUG llm_conductor." in line]
    assert any("plan: 2 to run {'new': 2}" in line for line in debug), debug
    for name in ("a.prompt.md", "b.json.prompt.md"):
        assert any(f"{name} (new, key " in line and "attempt(s)" in line for line in debug)
    assert "DEBUG" not in quiet.stderr and "ok a.prompt.md" in quiet.stderr

    verbose = cli("-v", *args, "--force", env={"LLM_CONDUCTOR_LOG_FILE": str(log)}, cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG plan: 2 to run {'forced': 2}" in verbose.stderr
