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

__all__ = ["FILE_ONLY", "LOG_FILE", "configure_logging", "set_stderr_level"]

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
