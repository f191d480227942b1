"""Test set-up: an isolated Prefect home, loopback-only servers, fake CLI tools.

Prefect reads its settings at import, so they are set here before anything imports it.
Commands without a Prefect API use the managed local server, as a user's do: the first one
starts it in the temporary Prefect home, the others (in-process and subprocesses, which
inherit PREFECT_HOME) connect to it in about a second; the session stops it at the end.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="llm-conductor-tests-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME / "prefect")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_PREFECT_HOME / "storage")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("LLM_CONDUCTOR_EPHEMERAL", None)
os.environ["LLM_CONDUCTOR_RAISE_ERRORS"] = "1"
os.environ["LLM_CONDUCTOR_LOG_FILE"] = str(_PREFECT_HOME / "llm-conductor.log")
for _key in (
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "MODEL_PROVIDER",
    "MODEL_NAME",
    "MODEL_REASONING",
    "OPENAI_BASE_URL",
):
    os.environ.pop(_key, None)
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)

import pytest  # noqa: E402

from tests.support.fixtures import *  # noqa: E402,F403  (llm_server, fake_cli_path)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the managed Prefect server the session's commands started (by its pid)."""
    from flows.runtime import ManagedServer

    ManagedServer(Path(os.environ["PREFECT_HOME"])).stop()


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
