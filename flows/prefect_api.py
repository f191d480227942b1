"""Whether a Prefect API is configured, decided without starting anything."""

from __future__ import annotations

import os

__all__ = ["prefect_api_url"]


def prefect_api_url() -> str | None:
    """The configured Prefect API URL (env or active profile), or None for ephemeral mode."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def start_ephemeral_api() -> None:
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
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if quieted:
            del os.environ["PREFECT_SERVER_LOGGING_LEVEL"]
