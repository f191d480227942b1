"""Pytest fixtures for the fake LLM server and the fake ``claude``/``codex`` executables.

Import them into ``tests/conftest.py``::

    from tests.support.fixtures import *  # noqa: F403
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.llm_server import LLMServer

__all__ = ["BIN_DIR", "FakeCLI", "fake_cli_path", "llm_server", "llm_server_session"]

BIN_DIR = Path(__file__).resolve().parent / "bin"
_FAKE_ENV = ("FAKE_CLI_MODE", "FAKE_CLI_REPLY", "FAKE_CLI_DELAY", "FAKE_CLI_LOG")


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
    """Handle on the fake CLIs for one test; setters go through ``monkeypatch``."""

    bin_dir: Path
    log_path: Path
    monkeypatch: pytest.MonkeyPatch

    def log_entries(self) -> list[dict[str, Any]]:
        """One dict per invocation so far: ``tool``, ``argv``, ``stdin``, ``cwd``, ``env``."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def set_mode(self, mode: str) -> None:
        """ok | not_logged_in | rate_limited | error | empty | hang | flaky | crash"""
        self.monkeypatch.setenv("FAKE_CLI_MODE", mode)

    def set_reply(self, text: str) -> None:
        self.monkeypatch.setenv("FAKE_CLI_REPLY", text)

    def set_delay(self, seconds: float) -> None:
        self.monkeypatch.setenv("FAKE_CLI_DELAY", str(seconds))


@pytest.fixture
def fake_cli_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCLI:
    """Put the fake ``claude`` and ``codex`` first on PATH, logging to a per-test file."""
    for name in _FAKE_ENV:  # a developer's shell must not script the fakes
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    log_path = tmp_path / "fake_cli_log.jsonl"
    monkeypatch.setenv("FAKE_CLI_LOG", str(log_path))
    return FakeCLI(BIN_DIR, log_path, monkeypatch)
