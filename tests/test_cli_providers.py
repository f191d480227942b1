"""claude and codex as real subprocesses: fake executables that speak the real formats of
claude-code 2.1.197 and codex-cli 0.171.0 (tests/support/FAKE_CLIS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocks import (
    AuthenticationFailed,
    CliProviderError,
    LLMProvider,
    ProviderTimeout,
    RateLimited,
    provider_from_env,
)
from blocks.errors import ProviderError, ProviderUnavailable, UsageError
from blocks.llm_provider import CONTINUE_PROMPT
from tests.support.fixtures import FakeCLI

CLAUDE_ARGV = ["-p", "--output-format", "json", "--tools", "", "--no-session-persistence"]
CODEX_ARGV = [
    "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only",
    "--disable", "shell_snapshot",
]  # fmt: skip


def claude(**fields: object) -> LLMProvider:
    return LLMProvider(kind="claude-code", backoff_base=0, **fields)  # type: ignore[arg-type]


def codex(**fields: object) -> LLMProvider:
    return LLMProvider(kind="openai-codex", backoff_base=0, **fields)  # type: ignore[arg-type]


# ---- claude --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_claude_flags_stdin_usage_and_cost(fake_cli_path: FakeCLI) -> None:
    fake_cli_path.set_reply("claude says hi")
    completion = await claude(model="sonnet").acomplete("Hello there")
    assert completion.text == "claude says hi"
    # modelUsage (answer + title call: 2+12 in, 3+4 out) is what total_cost_usd covers.
    assert (completion.prompt_tokens, completion.completion_tokens) == (14, 7)
    assert completion.cost == pytest.approx((14 * 5 + 7 * 25) / 1e6)
    assert completion.response_id
    [entry] = fake_cli_path.log_entries()
    assert entry["argv"] == [*CLAUDE_ARGV, "--model", "sonnet"]
    assert entry["stdin"] == "Hello there", "the prompt goes on stdin, never in argv"
    # --no-session-persistence: no transcript of the prompt and answer is left behind.
    assert not (Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects").exists()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("tools", "expected"),
    [("default", "default"), ("Read,Grep", "Read,Grep"), (["Read", "Grep"], "Read,Grep")],
)
async def test_claude_tools_can_be_turned_back_on(
    fake_cli_path: FakeCLI, tools: object, expected: str
) -> None:
    await claude(options={"tools": tools}).acomplete("x")
    argv = fake_cli_path.log_entries()[0]["argv"]
    assert argv[argv.index("--tools") + 1] == expected


@pytest.mark.asyncio
async def test_claude_bad_tools_option_is_a_usage_error(fake_cli_path: FakeCLI) -> None:
    with pytest.raises(UsageError, match="options.tools"):
        await claude(options={"tools": 3}).acomplete("x")
    assert fake_cli_path.log_entries() == []


@pytest.mark.asyncio
@pytest.mark.parametrize(("ours", "claudes"), [("minimal", "low"), ("medium", "medium")])
async def test_claude_reasoning_is_its_effort(fake_cli_path: FakeCLI, ours: str, claudes: str):
    await claude(reasoning_effort=ours).acomplete("x")
    argv = fake_cli_path.log_entries()[0]["argv"]
    assert argv[argv.index("--effort") + 1] == claudes


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "error", "attempts", "text"),
    [
        ("not_logged_in", AuthenticationFailed, 1, "Not logged in"),
        ("auth_failed", AuthenticationFailed, 1, "401"),
        ("forbidden", AuthenticationFailed, 1, "403"),
        ("rate_limited", RateLimited, 3, "Request rejected (429)"),
        ("server_error", ProviderUnavailable, 3, "500 Internal Server Error"),
        ("overloaded", ProviderUnavailable, 3, "Repeated 529 Overloaded"),  # status null
        ("connection_reset", ProviderUnavailable, 3, "ECONNRESET"),  # status null
        ("max_tokens", CliProviderError, 1, "64000 output token maximum"),
    ],
)
async def test_claude_errors_are_classified_by_what_it_prints(
    fake_cli_path: FakeCLI, mode: str, error: type[ProviderError], attempts: int, text: str
) -> None:
    fake_cli_path.set_mode(mode)
    with pytest.raises(error, match=r"^claude-code: ") as raised:
        await claude(retries=2).acomplete("x")
    assert type(raised.value) is error and text in str(raised.value)
    assert len(fake_cli_path.log_entries()) == attempts


@pytest.mark.asyncio
async def test_claude_gets_only_allow_listed_environment(
    fake_cli_path: FakeCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-mine")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other-provider")
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES", raising=False)
    await claude().acomplete("x")
    env = fake_cli_path.log_entries()[0]["env"]
    assert {"ANTHROPIC_API_KEY", "PATH", "HOME", "LC_ALL", "CLAUDE_CONFIG_DIR"} <= env.keys()
    assert "OPENAI_API_KEY" not in env and "DATABASE_PASSWORD" not in env
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"  # bounded by default, in the child only
    assert "CLAUDE_CODE_MAX_RETRIES" not in os.environ

    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "7")  # the user's own value wins
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    await claude(options={"pass_env": ["AWS_REGION"]}).acomplete("x")
    env = fake_cli_path.log_entries()[1]["env"]
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "7" and env["AWS_REGION"] == "eu-west-1"


# ---- codex ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_codex_flags_reasoning_stdin_and_usage(fake_cli_path: FakeCLI) -> None:
    fake_cli_path.set_reply("codex answer")
    completion = await codex(model="gpt-6.2-sol", reasoning_effort="high").acomplete("Write it")
    assert completion.text == "codex answer"
    assert completion.cost is None, "codex reports no cost; none is made up"
    assert (completion.prompt_tokens, completion.completion_tokens) == (2, 2)
    [entry] = fake_cli_path.log_entries()
    assert entry["argv"] == [
        *CODEX_ARGV, "-m", "gpt-6.2-sol", "-c", 'model_reasoning_effort="high"', "-",
    ]  # fmt: skip
    assert entry["stdin"] == "Write it"


@pytest.mark.asyncio
async def test_codex_default_model_is_its_own(fake_cli_path: FakeCLI) -> None:
    provider = codex()
    assert provider.model_name == ""
    await provider.acomplete("x")
    assert fake_cli_path.log_entries()[0]["argv"] == [*CODEX_ARGV, "-"]


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["flaky", "warnings"])
async def test_codex_non_fatal_error_events_still_give_the_answer(
    fake_cli_path: FakeCLI, mode: str
) -> None:
    """ "Reconnecting... 1/5", "Model metadata ... not found", "Falling back from WebSockets":
    codex goes on to turn.completed and exit 0; the paid-for answer is kept."""
    fake_cli_path.set_mode(mode)
    fake_cli_path.set_reply("the answer")
    completion = await codex(model="gpt-5-codex", retries=0).acomplete("x")
    assert completion.text == "the answer" and completion.attempts == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "error", "attempts", "text"),
    [
        ("auth_failed", AuthenticationFailed, 1, "401 Unauthorized"),
        ("forbidden", AuthenticationFailed, 1, "403 Forbidden"),
        ("rate_limited", RateLimited, 3, "429 Too Many Requests"),
        ("server_error", ProviderUnavailable, 3, "experiencing high demand"),
        ("stream_dropped", ProviderUnavailable, 3, "stream disconnected before completion"),
        ("crash", CliProviderError, 1, "internal error"),
    ],
)
async def test_codex_errors_are_classified_by_what_it_prints(
    fake_cli_path: FakeCLI, mode: str, error: type[ProviderError], attempts: int, text: str
) -> None:
    fake_cli_path.set_mode(mode)
    with pytest.raises(error, match=r"^openai-codex: ") as raised:
        await codex(model="gpt-5-codex", retries=2).acomplete("x")
    message = str(raised.value)
    assert type(raised.value) is error and text in message
    # Its warnings (stderr, warning items, reconnect notices) are not our error message.
    for noise in ("WARNING", "Model metadata", "Reconnecting"):
        assert noise not in message
    assert len(fake_cli_path.log_entries()) == attempts


@pytest.mark.asyncio
async def test_codex_missing_key_of_its_configured_provider_is_an_auth_error(
    fake_cli_path: FakeCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(os.environ["CODEX_HOME"])
    home.mkdir()
    (home / "config.toml").write_text(
        'model_provider = "gw"\n[model_providers.gw]\nname = "gw"\n'
        'base_url = "http://127.0.0.1:9/v1"\nwire_api = "responses"\nenv_key = "GW_KEY"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("GW_KEY", raising=False)
    with pytest.raises(AuthenticationFailed, match="Missing environment variable: `GW_KEY`"):
        await codex(retries=2).acomplete("x")
    assert len(fake_cli_path.log_entries()) == 1

    # The key its config names is passed on, though it is on no list of ours.
    monkeypatch.setenv("GW_KEY", "gw-secret")
    assert (await codex().acomplete("x")).text == "echo: x"
    assert fake_cli_path.log_entries()[1]["env"]["GW_KEY"] == "***"


@pytest.mark.asyncio
async def test_codex_gets_only_allow_listed_environment_and_writes_no_snapshot(
    fake_cli_path: FakeCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-mine")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-other-provider")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-other")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    await codex().acomplete("x")
    env = fake_cli_path.log_entries()[0]["env"]
    assert {"OPENAI_API_KEY", "PATH", "HOME", "HTTPS_PROXY", "CODEX_HOME"} <= env.keys()
    assert "ANTHROPIC_API_KEY" not in env and "OPENROUTER_API_KEY" not in env
    assert not (Path(os.environ["CODEX_HOME"]) / "shell_snapshots").exists()


@pytest.mark.asyncio
async def test_offline_codex_fails_the_attempt_early(fake_cli_path: FakeCLI) -> None:
    """Offline it prints "Reconnecting... waiting for network" for ever: the attempt ends at
    that notice, long before its time-out (which would raise ProviderTimeout instead)."""
    fake_cli_path.set_mode("offline")
    with pytest.raises(ProviderUnavailable, match="cannot reach its model provider"):
        await codex(retries=0, timeout=600).acomplete("x")


@pytest.mark.asyncio
async def test_codex_partial_answer_at_max_tokens_is_continued(fake_cli_path: FakeCLI) -> None:
    """A max-tokens stop keeps the partial answer as finish_reason=length, so the shared
    continuation path asks for the rest."""
    fake_cli_path.set_modes("max_tokens", "ok")
    fake_cli_path.set_reply("one two three four")
    completion = await codex(retries=0).acomplete("count")
    assert completion.text == "one twoone two three four"
    assert completion.segments == 2 and completion.finish_reason == "stop"
    second = fake_cli_path.log_entries()[1]["stdin"]
    assert "[assistant]\none two" in second and CONTINUE_PROMPT in second


@pytest.mark.parametrize(
    ("env", "effort"),
    [
        ({"CODEX_REASONING_EFFORT": "low"}, "low"),
        ({"CODEX_REASONING_EFFORT": "high", "MODEL_REASONING": "low"}, "high"),
        ({"MODEL_REASONING": "medium"}, "medium"),
    ],
)
def test_codex_reasoning_effort_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], effort: str
) -> None:
    monkeypatch.delenv("MODEL_REASONING", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert provider_from_env("openai-codex").reasoning_effort == effort


def test_bad_codex_reasoning_effort_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_REASONING", raising=False)
    monkeypatch.setenv("CODEX_REASONING_EFFORT", "extreme")
    with pytest.raises(
        UsageError, match="invalid reasoning effort 'extreme' in CODEX_REASONING_EFFORT; choose"
    ):
        provider_from_env("openai-codex")
    assert provider_from_env("openai").reasoning_effort is None  # codex's variable only


# ---- both ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["claude-code", "openai-codex"])
async def test_hanging_cli_is_killed_at_the_timeout(fake_cli_path: FakeCLI, kind: str) -> None:
    fake_cli_path.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="killed"):
        await LLMProvider(kind=kind, timeout=0.5, retries=0).acomplete("x")
    assert time.monotonic() - started < 60  # the fake hangs forever: any end is the kill


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "tool"), [("claude-code", "claude"), ("openai-codex", "codex")])
async def test_missing_binary_says_how_to_install(monkeypatch, tmp_path, kind, tool):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CliProviderError, match=f"`{tool}` not found on PATH.*npm install"):
        await LLMProvider(kind=kind).acomplete("x")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["claude-code", "openai-codex"])
async def test_answers_larger_than_a_stream_buffer_arrive_whole(
    fake_cli_path: FakeCLI, kind: str
) -> None:
    """claude prints its whole result as one JSON line: 300 kB in one line must not trip a
    line-length limit while the output is watched."""
    reply = "word " * 60_000
    fake_cli_path.set_reply(reply)
    assert (await LLMProvider(kind=kind, retries=0).acomplete("x")).text == reply


# ---- from the command line -------------------------------------------------------------------


def llm_conductor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("llm-conductor")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_reasoning_reaches_claude_as_effort(fake_cli_path: FakeCLI) -> None:
    fake_cli_path.set_reply("done")
    done = llm_conductor("run", "-p", "claude-code", "--reasoning", "high", "--prompt", "hi")
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr
    argv = fake_cli_path.log_entries()[0]["argv"]
    assert argv[argv.index("--effort") + 1] == "high"


def test_cli_bad_codex_reasoning_variable_exits_2(fake_cli_path: FakeCLI) -> None:
    done = llm_conductor(
        "run", "-p", "openai-codex", "--prompt", "hi", env={"CODEX_REASONING_EFFORT": "max"}
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: invalid reasoning effort 'max' in CODEX_REASONING_EFFORT; choose one of "
        "minimal, low, medium, high"
    ]
    assert fake_cli_path.log_entries() == []
