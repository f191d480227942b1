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

CLAUDE = [
    "claude", "-p", "--output-format", "json", "--tools", "", "--no-session-persistence",
    "--model", "sonnet",
]  # fmt: skip
CODEX = [
    "codex", "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only",
    "--disable", "shell_snapshot", "-m", "gpt-6.2-sol", "-c", 'model_reasoning_effort="high"',
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
    for tool in ("claude", "codex"):
        wrapper = shutil.which(tool)
        assert wrapper == str(fake_cli_path.bin_dir / tool)
        assert str(BIN_DIR / tool) in Path(wrapper).read_text()


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
    # modelUsage and the cost include the session-title call, usage does not (2.1.197).
    [model_usage] = result["modelUsage"].values()
    assert (model_usage["inputTokens"], model_usage["outputTokens"]) == (14, 7)
    assert result["total_cost_usd"] == model_usage["costUSD"] > 0 and result["num_turns"] == 1
    assert {"session_id", "uuid", "duration_ms", "permission_denials"} <= result.keys()
    assert result["api_error_status"] is None and result["stop_reason"] == "end_turn"
    (entry,) = fake_cli_path.log_entries()
    assert entry["tool"] == "claude" and entry["argv"] == argv[1:]
    assert entry["stdin"] == "hello there" and entry["cwd"] == str(tmp_path)


def test_claude_not_logged_in_says_success(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_mode("not_logged_in")
    done = run(CLAUDE, tmp_path, stdin="hi")
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert result["result"] == "Not logged in · Please run /login"
    assert result["api_error_status"] is None


@pytest.mark.parametrize(
    ("mode", "status", "start"),
    [
        ("auth_failed", 401, "Failed to authenticate. API Error: 401 "),
        ("forbidden", 403, "Failed to authenticate. API Error: 403 "),
        ("rate_limited", 429, "API Error: Request rejected (429) · "),
        ("server_error", 500, "API Error: 500 Internal Server Error. This is a server-side"),
        ("overloaded", None, "API Error: Repeated 529 Overloaded errors."),
        ("connection_reset", None, "API Error: Unable to connect to API (ECONNRESET)"),
        ("max_tokens", None, "API Error: Claude's response exceeded the 64000 output token"),
    ],
)
def test_claude_api_errors(
    fake_cli_path: FakeCLI, tmp_path: Path, mode: str, status: int | None, start: str
) -> None:
    fake_cli_path.set_mode(mode)
    done = run(CLAUDE, tmp_path, stdin="hi")
    result = json.loads(done.stdout)
    assert done.returncode == 1 and result["is_error"] is True
    assert result["api_error_status"] == status and result["subtype"] == "success"
    assert result["result"].startswith(start)


def test_claude_session_persistence_and_effort(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    config = tmp_path / "claude-config"
    fake_cli_path.set_reply("the answer")
    kept = run(["claude", "-p", "--output-format", "json"], tmp_path, stdin="the prompt")
    [transcript] = (config / "projects").glob("*/*.jsonl")
    assert json.loads(kept.stdout)["session_id"] in transcript.name
    assert "the prompt" in transcript.read_text() and "the answer" in transcript.read_text()
    transcript.unlink()
    run([*CLAUDE, "--effort", "xhigh"], tmp_path, stdin="q")
    assert list((config / "projects").glob("*/*.jsonl")) == []
    bogus = run([*CLAUDE, "--effort", "minimal"], tmp_path, stdin="q")
    assert bogus.returncode == 0 and "Unknown --effort value 'minimal'" in bogus.stderr


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
    # Variadic --allowedTools and --tools swallow the prompt, as in the real CLI.
    swallowed = run(["claude", "-p", "--allowedTools", "Read", "the prompt"], tmp_path, None)
    swallowed_by_tools = run(["claude", "-p", "--tools", "", "the prompt"], tmp_path, None)
    version = run(["claude", "--version"], tmp_path)

    assert (unknown.returncode, unknown.stderr) == (1, "error: unknown option '--no-such-flag'\n")
    assert bad_choice.returncode == 1 and "invalid choice" in bad_choice.stderr
    assert no_prompt.returncode == 1 and "Input must be provided" in no_prompt.stderr
    assert swallowed.returncode == 1
    assert swallowed_by_tools.returncode == 1 and "Input must be provided" in (
        swallowed_by_tools.stderr
    )
    assert version.stdout == "2.1.197 (Claude Code)\n"


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
    assert events[4]["usage"] == {
        "input_tokens": 2,
        "cached_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "output_tokens": 3,
        "reasoning_output_tokens": 0,
    }
    assert last.read_text() == "echo: hello there"
    (entry,) = fake_cli_path.log_entries()
    assert (
        entry["tool"] == "codex" and entry["argv"] == argv[1:] and entry["stdin"] == "hello there"
    )
    # CODEX_HOME under the temp folder: codex's own warning on stderr, nothing else.
    assert done.stderr.startswith("WARNING: proceeding, even though we could not create PATH")


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


@pytest.mark.parametrize(
    ("mode", "message", "retried"),
    [
        ("auth_failed", "unexpected status 401 Unauthorized: ", True),
        ("forbidden", "unexpected status 403 Forbidden: ", True),
        ("rate_limited", "exceeded retry limit, last status: 429 Too Many Requests", False),
        ("server_error", "We’re currently experiencing high demand", True),
        ("stream_dropped", "stream disconnected before completion: ", True),
        ("missing_key", "Missing environment variable: `OPENAI_API_KEY`.", False),
    ],
)
def test_codex_failures(
    fake_cli_path: FakeCLI, tmp_path: Path, mode: str, message: str, retried: bool
) -> None:
    fake_cli_path.set_mode(mode)
    last = tmp_path / "last.txt"
    done = run([*CODEX, "-o", str(last), "-"], tmp_path, stdin="hi")

    events = jsonl(done.stdout)
    assert done.returncode == 1
    assert events[-2]["type"] == "error" and events[-2]["message"].startswith(message)
    assert events[-1] == {"type": "turn.failed", "error": {"message": events[-2]["message"]}}
    notices = [e["message"] for e in events[:-2] if e["type"] == "error"]
    assert notices == ([f"Reconnecting... 1/5 ({events[-2]['message']})"] if retried else [])
    assert last.read_text() == "" and "no last agent message" in done.stderr


def test_codex_max_tokens_keeps_the_partial_message(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    fake_cli_path.set_mode("max_tokens")
    fake_cli_path.set_reply("one two three four")
    events = jsonl(run([*CODEX, "-"], tmp_path, stdin="hi").stdout)
    assert [e["type"] for e in events][-3:] == ["item.completed", "error", "turn.failed"]
    assert events[-3]["item"]["text"] == "one two"
    assert events[-1]["error"]["message"] == (
        "Incomplete response returned, reason: max_output_tokens"
    )


@pytest.mark.parametrize("mode", ["flaky", "warnings"])
def test_codex_error_events_are_not_fatal(fake_cli_path: FakeCLI, tmp_path: Path, mode: str):
    fake_cli_path.set_mode(mode)
    done = run([*CODEX, "-m", "gpt-5-codex", "-"], tmp_path, stdin="hi")
    events = jsonl(done.stdout)
    types = [e["type"] for e in events]
    assert done.returncode == 0
    assert "error" in types and types[-1] == "turn.completed"
    warnings = [e["item"]["message"] for e in events if e.get("item", {}).get("type") == "error"]
    assert warnings[0].startswith("Model metadata for `gpt-5-codex` not found.")


def test_codex_offline_waits_for_network_until_killed(
    fake_cli_path: FakeCLI, tmp_path: Path
) -> None:
    fake_cli_path.set_mode("offline")
    process = subprocess.Popen(
        [*CODEX, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        process.stdin.write("hi")  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
        lines = iter(process.stdout.readline, "")  # type: ignore[union-attr]
        notices = [json.loads(line) for line, _ in zip(lines, range(4), strict=False)][2:]
        assert [n["message"] for n in notices] == [
            "Reconnecting... waiting for network (Connection failed: error sending request)"
        ] * 2
        assert process.poll() is None  # it never gives up by itself
    finally:
        process.kill()
        process.wait()


def test_codex_config_env_key_and_shell_snapshot(
    fake_cli_path: FakeCLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model_provider = "gw"\n[model_providers.gw]\nname = "gw"\nenv_key = "GW_KEY"\n'
    )
    monkeypatch.delenv("GW_KEY", raising=False)
    argv = ["codex", "exec", "--json", "--skip-git-repo-check", "-"]
    missing = jsonl(run(argv, tmp_path, stdin="hi").stdout)
    assert missing[-1]["error"]["message"] == "Missing environment variable: `GW_KEY`."
    monkeypatch.setenv("GW_KEY", "gw-secret")
    assert run(argv, tmp_path, stdin="hi").returncode == 0
    # Without --disable shell_snapshot the whole environment lands in a 0644 file.
    snapshots = list((home / "shell_snapshots").glob("*.sh"))
    assert any('declare -x GW_KEY="gw-secret"' in path.read_text() for path in snapshots)
    assert {path.stat().st_mode & 0o777 for path in snapshots} == {0o644}


def test_codex_usage_errors_and_commands(fake_cli_path: FakeCLI, tmp_path: Path) -> None:
    unknown = run([*CODEX, "--no-such-flag", "-"], tmp_path, stdin="hi")
    full_auto = run(["codex", "exec", "--full-auto", "hi"], tmp_path, None)
    twice = run(["codex", "exec", "--json", "--experimental-json", "hi"], tmp_path, None)
    alias = run(["codex", "exec", "--experimental-json", "--skip-git-repo-check", "hi"], tmp_path)
    bad_sandbox = run(["codex", "exec", "-s", "everything", "hi"], tmp_path, None)
    bad_config = run(["codex", "exec", "-c", "no_equals", "hi"], tmp_path, None)
    version = run(["codex", "--version"], tmp_path)
    status = run(["codex", "login", "status"], tmp_path)

    assert unknown.returncode == 2
    assert "error: unexpected argument '--no-such-flag' found" in unknown.stderr
    assert full_auto.returncode == 2
    assert "error: unexpected argument '--full-auto' found" in full_auto.stderr
    assert twice.returncode == 2 and "'--json' cannot be used multiple times" in twice.stderr
    assert alias.returncode == 0 and jsonl(alias.stdout)[-1]["type"] == "turn.completed"
    assert bad_sandbox.returncode == 2 and "[possible values: read-only" in bad_sandbox.stderr
    assert bad_config.returncode == 2
    assert version.stdout == "codex-cli 0.171.0\n"
    assert status.returncode == 0
    fake_cli_path.set_mode("auth_failed")
    assert run(["codex", "login", "status"], tmp_path).returncode == 1
