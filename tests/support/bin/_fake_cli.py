"""Shared plumbing of the fake ``claude`` and ``codex`` executables (stdlib only).

Tests script the fakes through the environment:

* ``FAKE_CLI_MODE``: ok (default) | not_logged_in | rate_limited | error | empty | hang |
  flaky (codex: a non-fatal "Reconnecting..." error event, then success) |
  crash (no JSON at all, a stack trace on stderr);
* ``FAKE_CLI_REPLY``: the answer (default ``"echo: <prompt>"``);
* ``FAKE_CLI_DELAY``: seconds to wait before answering;
* ``FAKE_CLI_LOG``: a file that gets one JSON line per invocation, written before any
  output, so that even a killed ("hang") or rejected call can be asserted on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NoReturn

MODES = frozenset(
    {"ok", "not_logged_in", "rate_limited", "error", "empty", "hang", "flaky", "crash"}
)
# Environment variables worth asserting on; values of secrets are never logged.
_LOGGED_ENV_PREFIXES = ("CLAUDE_", "CODEX_", "ANTHROPIC_", "OPENAI_")
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET")


def mode() -> str:
    value = os.environ.get("FAKE_CLI_MODE", "ok") or "ok"
    if value not in MODES:
        fail(f"fake CLI: unknown FAKE_CLI_MODE {value!r} (one of {sorted(MODES)})", code=3)
    return value


def reply_for(prompt: str) -> str:
    return os.environ.get("FAKE_CLI_REPLY", f"echo: {prompt.strip()}")


def count_tokens(text: str) -> int:
    # Words, like the fake LLM server: deterministic and easy to assert.
    return len(text.split())


def log_invocation(tool: str, stdin: str | None) -> None:
    path = os.environ.get("FAKE_CLI_LOG")
    if not path:
        return
    env = {
        name: "***" if any(m in name for m in _SECRET_MARKERS) else value
        for name, value in os.environ.items()
        if name.startswith(_LOGGED_ENV_PREFIXES)
    }
    entry = {"tool": tool, "argv": sys.argv[1:], "stdin": stdin, "cwd": os.getcwd(), "env": env}
    # One O_APPEND write per line keeps lines whole when several fakes run at once.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def read_stdin() -> str:
    return "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()


def pause_or_hang(current_mode: str) -> None:
    delay = float(os.environ.get("FAKE_CLI_DELAY", "0") or 0)
    if delay > 0:
        time.sleep(delay)
    if current_mode == "hang":
        while True:  # like a CLI stuck retrying without network: only a kill ends it
            time.sleep(3600)


def crash(tool: str) -> NoReturn:
    print(f"{tool}: internal error (FAKE_CLI_MODE=crash)\n    at main (fake:1:1)", file=sys.stderr)
    sys.exit(101 if tool == "codex" else 1)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(code)
