"""Logging for the CLI: DEBUG to a rotating file, INFO and up (or DEBUG with -v) to stderr.

Per-prompt detail is logged at DEBUG with ``extra=FILE_ONLY``: it is for the log file (and
stderr with -v), not for Prefect's API, which gets our INFO lines (PREFECT_LOGGING_EXTRA_LOGGERS)
and would otherwise store a row per DEBUG line too.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

__all__ = [
    "FILE_ONLY",
    "LOG_FILE",
    "NOT_ON_STDERR",
    "configure_logging",
    "log_to_prefect",
    "set_stderr_level",
]

#: ``extra=`` for a line the command prints itself (its summary): the log file and the
#: Prefect flow run's logs get it, the command's stderr not twice.
NOT_ON_STDERR = {"not_on_stderr": True}

LOG_FILE = Path(".local/logs/llm-conductor.log")
#: ``extra`` for log calls that Prefect's API log handler must skip (it reads ``send_to_api``).
FILE_ONLY = {"send_to_api": False}
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """Set up the ``llm_conductor`` logger once per process; stdout is never used."""
    logger = logging.getLogger("llm_conductor")
    if getattr(logger, "_conductor_configured", False):
        return
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # Prefect's handlers add their own copy otherwise
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.DEBUG if verbose else logging.INFO)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    stderr.addFilter(lambda record: not getattr(record, "not_on_stderr", False))
    logger.addHandler(stderr)
    log_file = Path(os.environ.get("LLM_CONDUCTOR_LOG_FILE", LOG_FILE))
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError as error:  # a read-only working directory must not stop the run
        logger.warning("cannot write the log file %s: %s", log_file, error)
    else:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
    # Libraries' warnings (litellm's "coroutine was never awaited" at exit, pydantic's
    # deprecations) are noise for a user reading stderr: keep them in the log file, and on
    # stderr only with --verbose.
    logging.captureWarnings(True)
    library_warnings = logging.getLogger("py.warnings")
    library_warnings.propagate = False
    for target in logger.handlers:
        if verbose or isinstance(target, logging.FileHandler):
            library_warnings.addHandler(target)
    # A task run that fails with one of our errors (a 429, a 401...) is expected: Prefect's
    # "Task run failed" record would print the whole traceback; its next record, "Finished
    # in state Failed(<our error>)", already says it in one line.
    logging.getLogger("prefect.task_runs").addFilter(_expected_task_failure)
    logger._conductor_configured = True  # type: ignore[attr-defined]


def _expected_task_failure(record: logging.LogRecord) -> bool:
    """False (drop) for Prefect's traceback record of a task run ended by a ConductorError."""
    if record.exc_info and record.getMessage().startswith("Task run failed with exception"):
        from blocks.errors import ConductorError

        return not isinstance(record.exc_info[1], ConductorError)
    return True


def set_stderr_level(level: str) -> None:
    """Change what reaches stderr (``debug``, ``info``, ``warning``, ``error``)."""
    from blocks.errors import UsageError

    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise UsageError(f"invalid --log-level {level!r}; choose debug, info, warning or error")
    for handler in logging.getLogger("llm_conductor").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(value)


def _verbose() -> bool:
    return any(
        type(h) is logging.StreamHandler and h.level <= logging.DEBUG
        for h in logging.getLogger("llm_conductor").handlers
    )


class _ExpectedOutcomes(logging.Filter):
    """Keeps Prefect's console lines about ordinary outcomes off stderr (our own one-line
    messages and the summary say them): a prompt that failed in an expected way (its
    traceback), "Finished in state ..." of task and flow runs, and "Crash detected!" while
    the command is stopping. They still reach the Prefect UI and the log file."""

    RUNS = ("prefect.task_runs", "prefect.flow_runs")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.RUNS):
            return True
        from blocks.errors import ConductorError
        from flows.interrupt import stop_requested

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConductorError):
            return False
        message = record.getMessage()
        if message.startswith("Finished in state "):
            return False
        return not (stop_requested() and "Crash detected" in message)


_QUIET = _ExpectedOutcomes()


def _quiet_prefect_console() -> None:
    """Prefect's console lines for ordinary outcomes off stderr (unless -v); its warnings and
    errors (tracebacks included) in our log file too."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    loggers += [logging.getLogger(name) for name in _RUN_LOGGERS]
    if not _verbose():
        for logger in loggers:
            for handler in logger.handlers:
                if isinstance(handler, PrefectConsoleHandler) and _QUIET not in handler.filters:
                    handler.addFilter(_QUIET)
    prefect_logger = logging.getLogger("prefect")
    for handler in logging.getLogger("llm_conductor").handlers:
        if isinstance(handler, logging.FileHandler) and handler not in prefect_logger.handlers:
            prefect_logger.addHandler(handler)


_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def log_to_prefect() -> None:
    """The project's log lines go to the Prefect flow run they belong to (the UI's logs).

    ``PREFECT_LOGGING_EXTRA_LOGGERS`` does that only when set before Prefect configures its
    logging; a worker's flow-run process imports Prefect first. Also quiets Prefect's
    console (``_ExpectedOutcomes``): Prefect configures its logging when the first flow run
    starts, so this is called at the start of every flow body (idempotent).
    """
    from prefect.logging.handlers import APILogHandler

    _quiet_prefect_console()
    ours = logging.getLogger("llm_conductor")
    if not any(isinstance(h, APILogHandler) for h in ours.handlers):
        extra = [
            h for h in logging.getLogger("prefect.extra").handlers if isinstance(h, APILogHandler)
        ]
        ours.addHandler(extra[0] if extra else APILogHandler())
    if ours.level == logging.NOTSET:  # no configure_logging: a worker's process
        ours.setLevel(logging.INFO)
