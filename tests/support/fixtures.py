"""Pytest fixtures for the fake LLM server and the fake ``claude``/``codex`` executables.

Import them into ``tests/conftest.py``::

    from tests.support.fixtures import *  # noqa: F403
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.llm_server import LLMServer

__all__ = ["BIN_DIR", "FakeCLI", "fake_cli_path", "llm_server", "llm_server_session"]

BIN_DIR = Path(__file__).resolve().parent / "bin"
_FAKE_ENV = (
    "FAKE_CLI_SCRIPT", "FAKE_CLI_MODE", "FAKE_CLI_REPLY", "FAKE_CLI_DELAY", "FAKE_CLI_LOG",
)  # fmt: skip


@pytest.fixture(scope="session")
def llm_server_session() -> Iterator[LLMServer]:
    """One server for the whole session: starting one per test would cost a thread each."""
    with LLMServer() as server:
        yield server


@pytest.fixture
def llm_server(llm_server_session: LLMServer) -> Iterator[LLMServer]:
    """The session's server, reset before and after each test (faults, records, settings)."""
    llm_server_session.reset()
    yield llm_server_session
    llm_server_session.reset()


@dataclass(frozen=True)
class FakeCLI:
    """Handle on the fake CLIs for one test.

    The script (mode, reply, delay, log file) is a JSON file that per-test wrappers of the
    fakes point them at, so it reaches them whatever environment our code gives the child.
    """

    bin_dir: Path
    log_path: Path
    script_path: Path

    def log_entries(self) -> list[dict[str, Any]]:
        """One dict per invocation so far: ``tool``, ``argv``, ``stdin``, ``cwd``, ``env``."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def _set(self, **values: Any) -> None:
        script = json.loads(self.script_path.read_text(encoding="utf-8"))
        script.update(values)
        self.script_path.write_text(json.dumps(script), encoding="utf-8")

    def set_mode(self, mode: str) -> None:
        """A mode of ``tests/support/bin/_fake_cli.py`` (CLAUDE_MODES, CODEX_MODES)."""
        self._set(mode=mode)

    def set_modes(self, *modes: str) -> None:
        """One mode per invocation, in order; the last one repeats."""
        self._set(modes=list(modes))

    def set_reply(self, text: str) -> None:
        self._set(reply=text)

    def set_delay(self, seconds: float) -> None:
        self._set(delay=seconds)


@pytest.fixture
def fake_cli_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCLI:
    """Put wrappers of the fake ``claude`` and ``codex`` first on PATH, scripted by a per-test
    file; their config folders (CLAUDE_CONFIG_DIR, CODEX_HOME) are per-test too."""
    for name in _FAKE_ENV:  # a developer's shell must not script the fakes
        monkeypatch.delenv(name, raising=False)
    wrappers = tmp_path / "fake-bin"
    wrappers.mkdir()
    log_path = tmp_path / "fake_cli_log.jsonl"
    script_path = tmp_path / "fake_cli_script.json"
    script_path.write_text(json.dumps({"log": str(log_path)}), encoding="utf-8")
    for tool in ("claude", "codex"):
        wrapper = wrappers / tool
        wrapper.write_text(
            f"#!/bin/sh\nFAKE_CLI_SCRIPT={shlex.quote(str(script_path))} "
            f'exec {shlex.quote(str(BIN_DIR / tool))} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    return FakeCLI(wrappers, log_path, script_path)
