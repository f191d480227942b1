"""Whether a Prefect API is configured, decided without starting anything."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.server.api.server import SubprocessASGIServer

__all__ = ["prefect_api", "prefect_api_url", "start_ephemeral_api"]


def prefect_api_url() -> str | None:
    """The configured Prefect API URL (env, profile or settings file), or None for ephemeral
    mode.

    Prefect answers this from its settings, but importing it costs ≈1.1 s. When Prefect is not
    imported yet and none of the places its settings come from could hold an API URL, the
    answer is None without asking (a batch with nothing to do then never imports Prefect).
    """
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    if "prefect" not in sys.modules and not _settings_may_set_api_url():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _settings_may_set_api_url(cwd: Path | None = None) -> bool:
    """Whether a Prefect settings source other than the environment might set the API URL:
    a chosen profile or profiles file, ``.env``, ``prefect.toml`` or ``[tool.prefect]`` in the
    current folder, or ``PREFECT_API_URL`` in the profiles file. Errs towards yes."""
    if os.environ.get("PREFECT_PROFILE") or os.environ.get("PREFECT_PROFILES_PATH"):
        return True
    here = cwd or Path.cwd()
    if (here / ".env").is_file() or (here / "prefect.toml").is_file():
        return True
    if "tool.prefect" in _text(here / "pyproject.toml"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    return "PREFECT_API_URL" in _text(home / "profiles.toml")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """A Prefect API for the flows run inside: the configured one, or an ephemeral server.

    The ephemeral server is started deaf to Ctrl-C (see ``start_ephemeral_api``) and stopped
    quietly on the way out, after pending events are sent, so the command's own summary
    stays its last line.
    """
    if prefect_api_url():
        yield
        return
    server = start_ephemeral_api()
    try:
        yield
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.server.api import server as server_module

        EventsWorker.drain_all(timeout=5)
        server_module.subprocess_server_logger.setLevel(logging.WARNING)
        server.stop()


def start_ephemeral_api() -> SubprocessASGIServer:
    """Start Prefect's ephemeral API server now, deaf to Ctrl-C.

    Prefect starts it lazily as a child process in our process group, so Ctrl-C in a terminal
    reaches it too; it shuts down at once and the interrupted flow then hangs for a minute
    retrying to report its final state. Started with SIGINT blocked (a blocked signal mask is
    inherited across exec), it keeps serving until Prefect stops it at exit, and Ctrl-C stops
    only the flow, cleanly.
    """
    import signal

    from prefect.server.api.server import SubprocessASGIServer

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    # Its stderr is ours: without this, its shutdown prints tracebacks of cancelled flushes.
    quieted = "PREFECT_SERVER_LOGGING_LEVEL" not in os.environ
    if quieted:
        os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "CRITICAL"
    server = SubprocessASGIServer()
    try:
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if quieted:
            del os.environ["PREFECT_SERVER_LOGGING_LEVEL"]
    return server
