"""Shared plumbing of the fake ``claude`` and ``codex`` executables (stdlib only).

Which real versions they follow (formats, texts, flags, exit codes), checked against the real
tools pointed at local fake backends: see ``tests/support/FAKE_CLIS.md``;
``tests/support/replay_real_clis.py`` replays these modes against the real tools.

A script tells the fakes what to do: the JSON file named by ``FAKE_CLI_SCRIPT`` (what the
``fake_cli_path`` fixture writes, so that it works whatever environment our code passes to the
child) or, when that is unset, the ``FAKE_CLI_*`` variables:

* ``mode``: see ``CLAUDE_MODES`` / ``CODEX_MODES`` (default ok); or ``modes``, a list: the
  n-th invocation (counted in the log) takes the n-th, the last one repeating;
* ``reply``: the answer (default ``"echo: <prompt>"``);
* ``delay``: seconds to wait before answering;
* ``log``: a file that gets one JSON line per invocation, written before any output, so that
  even a killed ("hang") or rejected call can be asserted on. It holds argv, stdin, cwd and the
  whole environment, the values of secret-looking names masked.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NoReturn

COMMON_MODES = frozenset({"ok", "empty", "hang", "crash"})
CLAUDE_MODES = COMMON_MODES | {
    "not_logged_in",  # no key, no login: status null, no request made
    "auth_failed",  # 401 from the API
    "forbidden",  # 403 from the API
    "rate_limited",  # 429
    "server_error",  # 500
    "overloaded",  # 529 after its own retries: "Repeated 529 Overloaded errors", status null
    "connection_reset",  # "Unable to connect to API (ECONNRESET)", status null
    "max_tokens",  # the answer hit the output limit: is_error, no text
}
CODEX_MODES = COMMON_MODES | {
    "flaky",  # a "Reconnecting... 1/5" error event, then the answer: exit 0
    "warnings",  # warning items and notices (metadata, WebSockets fallback), then the answer
    "auth_failed",  # 401
    "forbidden",  # 403
    "missing_key",  # the configured provider's env_key is not set
    "rate_limited",  # 429
    "server_error",  # 5xx: "We're currently experiencing high demand..."
    "stream_dropped",  # "stream disconnected before completion: ..."
    "offline",  # "Reconnecting... waiting for network" until killed
    "max_tokens",  # a partial answer, then turn.failed "Incomplete response returned..."
}
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def _script() -> dict[str, Any]:
    path = os.environ.get("FAKE_CLI_SCRIPT")
    if path:
        with open(path, encoding="utf-8") as handle:
            return dict(json.load(handle))
    return {
        name: os.environ[f"FAKE_CLI_{name.upper()}"]
        for name in ("mode", "reply", "delay", "log")
        if f"FAKE_CLI_{name.upper()}" in os.environ
    }


SCRIPT = _script()


#: How many invocations the log held before this one (set by ``log_invocation``).
invocation = 0


def mode(tool: str) -> str:
    modes = SCRIPT.get("modes")
    if modes:
        value = str(modes[min(invocation, len(modes) - 1)])
    else:
        value = str(SCRIPT.get("mode") or "ok")
    modes = CLAUDE_MODES if tool == "claude" else CODEX_MODES
    if value not in modes:
        fail(f"fake {tool}: unknown mode {value!r} (one of {sorted(modes)})", code=3)
    return value


def reply_for(prompt: str) -> str:
    reply = SCRIPT.get("reply")
    return str(reply) if reply is not None else f"echo: {prompt.strip()}"


def count_tokens(text: str) -> int:
    # Words, like the fake LLM server: deterministic and easy to assert.
    return len(text.split())


def log_invocation(tool: str, stdin: str | None) -> None:
    global invocation
    path = SCRIPT.get("log")
    if not path:
        return
    if os.path.exists(str(path)):
        with open(str(path), encoding="utf-8") as handle:
            invocation = sum(1 for _ in handle)
    env = {
        name: "***" if any(m in name.upper() for m in _SECRET_MARKERS) else value
        for name, value in os.environ.items()
    }
    entry = {"tool": tool, "argv": sys.argv[1:], "stdin": stdin, "cwd": os.getcwd(), "env": env}
    # One O_APPEND write per line keeps lines whole when several fakes run at once.
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def read_stdin() -> str:
    return "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()


def pause() -> None:
    delay = float(SCRIPT.get("delay") or 0)
    if delay > 0:
        time.sleep(delay)


def hang() -> NoReturn:
    while True:  # like a CLI stuck retrying without network: only a kill ends it
        time.sleep(3600)


def crash(tool: str) -> NoReturn:
    print(f"{tool}: internal error (mode crash)\n    at main (fake:1:1)", file=sys.stderr)
    sys.exit(101 if tool == "codex" else 1)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(code)
