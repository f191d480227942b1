"""The fake ``claude`` and ``codex`` executables, run as real subprocesses from PATH.

The ``fake_cli_path`` fixture comes from ``tests/support/fixtures.py`` via ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixtures import BIN_DIR, FakeCLI

CLAUDE = ["claude", "-p", "--output-format", "json", "--model", "sonnet"]
CODEX = [
    "codex", "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only",
    "-m", "gpt-5", "-c", 'model_reasoning_effort="high"',
]  # fmt: skip


def run(argv: list[str], cwd: Path, stdin: str | None = "", timeout: float = 10) -> Any:
    return subprocess.run(
        argv,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_fakes_come_first_on_path(fake_cli_path: FakeCLI) -> None:
    assert shutil.which("claude") == str(BIN_DIR / "claude")
    assert shutil.which("codex") == str(BIN_DIR / "codex")


# ---- claude --------------------------------------------------------------------------------


def test_claude_json_result(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    argv = [*CLAUDE, "--max-turns", "1", "--append-system-prompt", "be brief",
            "--permission-mode", "plan", "--dangerously-skip-permissions"]  # fmt: skip
    done = run(argv, tmp_path, stdin="hello there")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["is_error"] is False and result["result"] == "echo: hello there"
    assert result["usage"]["input_tokens"] == 2 and result["usage"]["output_tokens"] == 3
    assert result["total_cost_usd"] > 0 and result["num_turns"] == 1
    assert {"session_id", "uuid", "duration_ms", "permission_denials"} <= result.keys()
    assert "api_error_status" not in result
    (entry,) = fake_cli_path.log_entries()
    assert entry["tool"] == "claude" and entry["argv"] == argv[1:]
    assert entry["stdin"] == "hello there" and entry["cwd"] == str(tmp_path)


def test_claude_not_logged_in_says_success(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_mode("not_logged_in")
    done = run(CLAUDE, tmp_path, stdin="hi")
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert result["result"] == "Invalid API key · Please run /login"
    assert result["api_error_status"] == 401


@pytest.mark.parametrize(("mode", "status"), [("rate_limited", 429), ("error", 529)])
def test_claude_api_errors(fake_cli_path: FakeCLI, tmp_path: Path, mode: str, status: int) -> None:
    fake_cli_path.set_mode(mode)
    done = run(CLAUDE, tmp_path, stdin="hi")
    result = json.loads(done.stdout)
    assert done.returncode == 1 and result["is_error"] is True
    assert result["api_error_status"] == status
    assert result["result"].startswith(f"API Error: {status} ")


def test_claude_output_variants(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_reply("the answer")
    text = run(["claude", "-p"], tmp_path, stdin="q")
    verbose = run([*CLAUDE, "--verbose"], tmp_path, stdin="q")
    stream = run(["claude", "-p", "--output-format", "stream-json", "--verbose"], tmp_path, "q")
    stream_quiet = run(["claude", "-p", "--output-format", "stream-json"], tmp_path, "q")
    positional = run(["claude", "-p", "--output-format", "json", "the prompt"], tmp_path, None)

    assert text.stdout == "the answer\n"
    messages = json.loads(verbose.stdout)  # --verbose: an array, the result last
    assert isinstance(messages, list) and messages[-1]["result"] == "the answer"
    assert [m["type"] for m in jsonl(stream.stdout)] == ["system", "assistant", "result"]
    assert stream_quiet.returncode == 1 and "requires --verbose" in stream_quiet.stderr
    assert json.loads(positional.stdout)["usage"]["input_tokens"] == 2
    assert fake_cli_path.log_entries()[-1]["stdin"] is None  # prompt came as an argument


def test_claude_usage_errors(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    unknown = run([*CLAUDE, "--no-such-flag"], tmp_path, stdin="hi")
    bad_choice = run(["claude", "-p", "--output-format", "xml"], tmp_path, stdin="hi")
    no_prompt = run(["claude", "-p"], tmp_path, stdin="")
    # Variadic --allowedTools swallows the prompt, as in the real CLI.
    swallowed = run(["claude", "-p", "--allowedTools", "Read", "the prompt"], tmp_path, None)
    version = run(["claude", "--version"], tmp_path)

    assert (unknown.returncode, unknown.stderr) == (1, "error: unknown option '--no-such-flag'\n")
    assert bad_choice.returncode == 1 and "invalid choice" in bad_choice.stderr
    assert no_prompt.returncode == 1 and "Input must be provided" in no_prompt.stderr
    assert swallowed.returncode == 1
    assert version.stdout.endswith("(Claude Code)\n")


def test_claude_hang_needs_a_hard_timeout(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_mode("hang")
    # Long enough for a slow start to log the prompt; the fake never ends by itself.
    with pytest.raises(subprocess.TimeoutExpired):  # subprocess.run kills it on expiry
        run(CLAUDE, tmp_path, stdin="hi", timeout=5)
    assert fake_cli_path.log_entries()[0]["stdin"] == "hi"  # logged before hanging


def test_delay_empty_and_crash(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_delay(0.3)
    started = time.monotonic()
    delayed = run(CLAUDE, tmp_path, stdin="hi")
    assert time.monotonic() - started >= 0.3 and delayed.returncode == 0
    fake_cli_path.set_delay(0)
    fake_cli_path.set_mode("empty")
    assert json.loads(run(CLAUDE, tmp_path, stdin="hi").stdout)["result"] == ""
    fake_cli_path.set_mode("crash")
    crashed = run(CLAUDE, tmp_path, stdin="hi")
    assert crashed.returncode == 1 and crashed.stdout == "" and "internal error" in crashed.stderr


# ---- codex ---------------------------------------------------------------------------------


def test_codex_exec_events(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    last = tmp_path / "last.txt"
    argv = [*CODEX, "-o", str(last), "-"]
    done = run(argv, tmp_path, stdin="hello there")

    assert done.returncode == 0, done.stderr
    events = jsonl(done.stdout)
    assert [e["type"] for e in events] == [
        "thread.started", "turn.started", "item.completed", "item.completed", "turn.completed",
    ]  # fmt: skip
    assert events[0]["thread_id"]
    assert events[2]["item"]["type"] == "reasoning"  # reasoning effort "high" was asked for
    assert events[3]["item"] == {
        "id": "item_1",
        "type": "agent_message",
        "text": "echo: hello there",
    }
    assert events[4]["usage"] == {"input_tokens": 2, "cached_input_tokens": 0, "output_tokens": 3}
    assert last.read_text() == "echo: hello there"
    (entry,) = fake_cli_path.log_entries()
    assert (
        entry["tool"] == "codex" and entry["argv"] == argv[1:] and entry["stdin"] == "hello there"
    )


def test_codex_prompt_argument_and_plain_output(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_reply("42")
    as_argument = run(["codex", "exec", "--json", "--skip-git-repo-check", "why?"], tmp_path, None)
    plain = run(["codex", "exec", "--skip-git-repo-check", "why?"], tmp_path, None)

    types = [e.get("item", {}).get("type") for e in jsonl(as_argument.stdout)]
    assert "reasoning" not in types and "agent_message" in types
    assert fake_cli_path.log_entries()[0]["stdin"] is None
    assert plain.stdout == "42\n" and "codex" in plain.stderr.lower()


def test_codex_git_repo_check(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    argv = ["codex", "exec", "--json", "hi"]
    refused = run(argv, tmp_path, None)
    (tmp_path / ".git").mkdir()
    inside = run(argv, tmp_path, None)

    assert refused.returncode == 1 and refused.stdout == ""
    assert "Not inside a trusted directory and --skip-git-repo-check was not specified." in (
        refused.stderr
    )
    assert inside.returncode == 0


@pytest.mark.parametrize("mode", ["not_logged_in", "rate_limited", "error"])
def test_codex_failures(fake_cli_path: FakeCLI, tmp_path: Path, mode: str) -> None:
    fake_cli_path.set_mode(mode)
    last = tmp_path / "last.txt"
    done = run([*CODEX, "-o", str(last), "-"], tmp_path, stdin="hi")

    events = jsonl(done.stdout)
    assert done.returncode == 1
    assert events[-2]["type"] == "error"
    assert events[-1] == {"type": "turn.failed", "error": {"message": events[-2]["message"]}}
    assert last.read_text() == "" and "no last agent message" in done.stderr


def test_codex_flaky_error_event_is_not_fatal(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_mode("flaky")
    done = run([*CODEX, "-"], tmp_path, stdin="hi")
    types = [e["type"] for e in jsonl(done.stdout)]
    assert done.returncode == 0
    assert "error" in types and types[-1] == "turn.completed"


def test_codex_usage_errors_and_commands(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    unknown = run([*CODEX, "--no-such-flag", "-"], tmp_path, stdin="hi")
    bad_sandbox = run(["codex", "exec", "-s", "everything", "hi"], tmp_path, None)
    bad_config = run(["codex", "exec", "-c", "no_equals", "hi"], tmp_path, None)
    version = run(["codex", "--version"], tmp_path)
    status = run(["codex", "login", "status"], tmp_path)

    assert unknown.returncode == 2
    assert "error: unexpected argument '--no-such-flag' found" in unknown.stderr
    assert bad_sandbox.returncode == 2 and "[possible values: read-only" in bad_sandbox.stderr
    assert bad_config.returncode == 2
    assert version.stdout.startswith("codex-cli ")
    assert status.returncode == 0
    fake_cli_path.set_mode("not_logged_in")
    assert run(["codex", "login", "status"], tmp_path).returncode == 1
