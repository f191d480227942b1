"""Replay the fake CLIs' scenarios against the real ``claude`` and ``codex`` (not run in CI).

Each mode of ``tests/support/bin/_fake_cli.py`` is produced for real by a local fake backend
on 127.0.0.1 (``LLMServer`` speaking Anthropic Messages for claude, a small OpenAI Responses
server here for codex), in throw-away HOME/CLAUDE_CONFIG_DIR/CODEX_HOME folders; the fake runs
the same command with that mode. For each pair it prints the exit codes, the error text and
how our providers classify both (``classify`` of claude_cli / codex_cli), and marks every
difference. Nothing goes to the internet (the tools' own telemetry is switched off where they
allow it, and every endpoint is local); the real tools must already be installed::

    npm install --prefix /tmp/real-clis @anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0
    .venv/bin/python -m tests.support.replay_real_clis --bin /tmp/real-clis/node_modules/.bin

Exit status 1 when any scenario differs: then update the fakes (and FAKE_CLIS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from blocks.llm_provider import LLMProvider
from blocks.providers import claude_cli, codex_cli
from tests.support.llm_server import LLMServer

FAKE_BIN = Path(__file__).resolve().parent / "bin"
PROMPT = "What is 2+2?"
TIMEOUT = 120.0

# ---- a minimal OpenAI Responses API (what codex 0.171 speaks with wire_api="responses") ---


class ResponsesServer:
    """``POST /v1/responses`` as an SSE stream; ``faults`` are taken one per request."""

    def __init__(self) -> None:
        self.faults: deque[str] = deque()
        self.reply = "four"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # model lists and the like: not there
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = server.faults.popleft() if server.faults else "ok"
                if fault.isdigit():
                    body = json.dumps({"error": {"message": f"status {fault}", "type": "x"}})
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self._event({"type": "response.created", "response": {"id": "resp_1"}})
                if fault == "drop_mid_stream":
                    self.wfile.flush()
                    self.close_connection = True
                    return
                text = {"type": "output_text", "text": server.reply}
                item = {"type": "message", "role": "assistant", "id": "m1", "content": [text]}
                self._event({"type": "response.output_item.done", "item": item})
                usage = {
                    "input_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 3,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 13,
                }
                if fault == "length":
                    details = {"reason": "max_output_tokens"}
                    response = {"id": "resp_1", "status": "incomplete", "usage": usage}
                    response["incomplete_details"] = details
                    self._event({"type": "response.incomplete", "response": response})
                else:
                    self._event(
                        {"type": "response.completed", "response": {"id": "resp_1", "usage": usage}}
                    )

            def _event(self, event: dict[str, Any]) -> None:
                self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---- running one command ----------------------------------------------------------------


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str


def run(
    argv: list[str], env: dict[str, str], cwd: Path, stop: Callable[[str], bool] | None = None
) -> Outcome:
    """Run with the prompt on stdin; ``stop`` may end it early on a stdout line (then the
    return code is None). The process group is killed at the end in every case."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write(PROMPT)
    process.stdin.close()
    lines: list[str] = []
    stopped = False
    timer = threading.Timer(TIMEOUT, lambda: os.killpg(process.pid, 9))
    timer.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if stop and stop(line):
                stopped = True
                break
    finally:
        timer.cancel()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
        process.wait()
    return Outcome(None if stopped else process.returncode, "".join(lines), process.stderr.read())


def base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


# ---- scenarios --------------------------------------------------------------------------

CLAUDE_FAULTS: dict[str, tuple[str | int | None, int]] = {
    # mode: (LLMServer fault for every request, or None; CLAUDE_CODE_MAX_RETRIES)
    "ok": (None, 0),
    "not_logged_in": (None, 0),
    "auth_failed": (401, 0),
    "forbidden": (403, 0),
    "rate_limited": (429, 0),
    "server_error": (500, 0),
    "overloaded": (529, 2),  # "Repeated 529" needs its own retries to run out
    "connection_reset": ("drop", 0),
    "max_tokens": ("length", 0),
}
#: Keys not compared per mode, with why.
IGNORED = {
    # The WebSockets fallback notice needs OpenAI's own endpoint; a local one has none.
    ("codex", "warnings"): {"events", "notices"},
}
CODEX_FAULTS: dict[str, list[str]] = {
    "ok": [],
    "flaky": ["drop_mid_stream"],
    "warnings": [],  # with -m gpt-5-codex: "Model metadata ... not found"
    "auth_failed": ["401"] * 8,
    "forbidden": ["403"] * 8,
    "missing_key": [],
    "rate_limited": ["429"] * 8,
    "server_error": ["500"] * 8,
    "stream_dropped": ["drop_mid_stream"] * 8,
    "offline": [],
    "max_tokens": ["length"],
}


def claude_summary(outcome: Outcome) -> dict[str, Any]:
    try:
        data = json.loads(outcome.stdout)
    except ValueError:
        return {"exit": outcome.returncode, "json": False, "stderr": outcome.stderr[-200:]}
    provider = LLMProvider(kind="claude-code")
    error = (
        claude_cli.classify(provider, data, outcome.returncode or 0, "")
        if data.get("is_error")
        else None
    )
    return {
        "exit": outcome.returncode,
        "is_error": data.get("is_error"),
        "api_error_status": data.get("api_error_status"),
        "text": normalise(str(data.get("result"))),
        "class": type(error).__name__ if error else None,
        "usage_le_modelUsage": usage_consistent(data),
    }


def usage_consistent(data: dict[str, Any]) -> bool | None:
    models = data.get("modelUsage") or {}
    if not models:
        return None
    main = (data.get("usage") or {}).get("input_tokens") or 0
    return bool(main <= sum(m.get("inputTokens", 0) for m in models.values()))


def codex_summary(outcome: Outcome) -> dict[str, Any]:
    run_ = codex_cli.parse_events(outcome.stdout)
    types: list[str] = []
    for line in outcome.stdout.splitlines():
        try:
            kind = json.loads(line).get("type")
        except (ValueError, AttributeError):
            continue
        if not types or types[-1] != kind:
            types.append(kind)
    provider = LLMProvider(kind="openai-codex")
    error = codex_cli.classify(provider, run_.failure, 1, "") if run_.failure else None
    return {
        "exit": outcome.returncode,
        "events": types,
        "failure": normalise(run_.failure or ""),
        "notices": sorted({normalise(n).split(" (")[0] for n in run_.notices}),
        "answer": run_.answer is not None,
        "class": type(error).__name__ if error else None,
    }


def normalise(text: str) -> str:
    """Drop what differs between backends, not between tools: ports, URLs, injected details."""
    text = re.sub(r", url: \S+", "", text)
    text = re.sub(r"\(\d+\.\d+\.\d+\.\d+:\d+\)", "(HOST)", text)
    text = re.sub(r"Reconnecting\.\.\. \d+/\d+", "Reconnecting... N/M", text)
    for marker in (
        "API Error: 401 ",
        "API Error: 403 ",
        "(429) · ",
        "Unauthorized: ",
        "Forbidden: ",
    ):
        if marker in text:
            text = text.split(marker)[0] + marker + "..."
    return re.sub(r"(Internal Server Error|Overloaded) \(injected by LLMServer\)", r"\1", text)


def replay_claude(real: str, root: Path, only: set[str]) -> list[str]:
    differences = []
    with LLMServer(reply="four") as server:
        for mode, (fault, retries) in CLAUDE_FAULTS.items():
            if only and mode not in only:
                continue
            server.reset()
            if fault == "length":
                server.length_rounds = 10
            elif fault is not None:
                server.enqueue(fault, times=20)
            argv = ["-p", "--output-format", "json", "--tools", "", "--no-session-persistence"]
            results = {}
            for label, exe in (("real", real), ("fake", str(FAKE_BIN / "claude"))):
                home = Path(tempfile.mkdtemp(dir=root))
                env = base_env(home) | {
                    "ANTHROPIC_BASE_URL": server.root_url,
                    "ANTHROPIC_API_KEY": "sk-ant-replay",
                    "CLAUDE_CONFIG_DIR": str(home / ".claude"),
                    "CLAUDE_CODE_MAX_RETRIES": str(retries),
                    "DISABLE_TELEMETRY": "1",
                    "DISABLE_AUTOUPDATER": "1",
                    "DISABLE_ERROR_REPORTING": "1",
                    "FAKE_CLI_MODE": mode,
                    "FAKE_CLI_REPLY": "four",
                }
                if mode == "not_logged_in":
                    del env["ANTHROPIC_API_KEY"]
                results[label] = claude_summary(run([exe, *argv], env, home))
                # --no-session-persistence: no transcript of prompt and answer is left.
                results[label]["transcripts"] = len(list(home.glob(".claude/projects/*/*.jsonl")))
            differences += report("claude", mode, results)
    return differences


def replay_codex(real: str, root: Path, only: set[str]) -> list[str]:
    differences = []
    backend = ResponsesServer()
    try:
        for mode, faults in CODEX_FAULTS.items():
            if only and mode not in only:
                continue
            argv = ["exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only"]
            argv += ["--disable", "shell_snapshot"]
            if mode == "warnings":
                argv += ["-m", "gpt-5-codex"]
            results = {}
            for label, exe in (("real", real), ("fake", str(FAKE_BIN / "codex"))):
                backend.faults = deque(faults)
                home = Path(tempfile.mkdtemp(dir=root))
                codex_home = home / ".codex"
                codex_home.mkdir()
                url = "http://127.0.0.1:9/v1" if mode == "offline" else backend.base_url
                (codex_home / "config.toml").write_text(
                    'model_provider = "replay"\n[model_providers.replay]\nname = "replay"\n'
                    f'base_url = "{url}"\nwire_api = "responses"\nenv_key = "OPENAI_API_KEY"\n'
                    "request_max_retries = 1\nstream_max_retries = 1\n",
                    encoding="utf-8",
                )
                env = base_env(home) | {
                    "CODEX_HOME": str(codex_home),
                    "OPENAI_API_KEY": "sk-replay",
                    "FAKE_CLI_MODE": mode,
                    "FAKE_CLI_REPLY": "four",
                }
                if mode == "missing_key":
                    del env["OPENAI_API_KEY"]
                stop = (lambda line: "waiting for network" in line) if mode == "offline" else None
                results[label] = codex_summary(run([exe, *argv, "-"], env, home, stop))
                # --disable shell_snapshot: the environment is not written to disk.
                results[label]["snapshots"] = len(list(codex_home.glob("shell_snapshots/*")))
            differences += report("codex", mode, results)
    finally:
        backend.close()
    return differences


def report(tool: str, mode: str, results: dict[str, dict[str, Any]]) -> list[str]:
    real, fake = results["real"], results["fake"]
    ignored = IGNORED.get((tool, mode), set())
    keys = [k for k in real if k not in ignored and real.get(k) != fake.get(k)]
    status = "same" if not keys else "DIFFERS in " + ", ".join(keys)
    print(f"{tool:6} {mode:17} {status}")
    for key in keys:
        print(f"    {key}: real={real.get(key)!r}\n    {' ' * len(key)}  fake={fake.get(key)!r}")
    return [f"{tool}:{mode}"] if keys else []


def find(name: str, bin_dir: str | None) -> str | None:
    if bin_dir:
        path = Path(bin_dir) / name
        return str(path) if path.exists() else None
    path_dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if Path(d) != FAKE_BIN]
    return shutil.which(name, path=os.pathsep.join(path_dirs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", help="folder holding the real claude and codex")
    parser.add_argument("--only", nargs="*", default=[], help="modes to replay (default all)")
    parser.add_argument("--tool", choices=["claude", "codex"], action="append")
    args = parser.parse_args()
    differences: list[str] = []
    with tempfile.TemporaryDirectory(prefix="replay-clis-") as folder:
        for tool, replay in (("claude", replay_claude), ("codex", replay_codex)):
            if args.tool and tool not in args.tool:
                continue
            real = find(tool, args.bin)
            if real is None:
                print(f"{tool}: not installed (see this script's docstring); skipped")
                continue
            version = subprocess.run(
                [real, "--version"], capture_output=True, text=True, timeout=60, check=False
            ).stdout.strip()
            print(f"{tool}: {real} ({version})")
            started = time.monotonic()
            differences += replay(real, Path(folder), set(args.only))
            print(f"{tool}: {time.monotonic() - started:.0f} s")
    if differences:
        print("differences:", ", ".join(differences))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
