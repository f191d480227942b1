"""The one retry loop every provider goes through.

litellm's own retries differ per provider (NOTES.md), so it is always called with
``max_retries=0`` and every transient failure comes back here: 429, 5xx, timeouts and dropped
connections are retried with exponential backoff and full jitter, honouring Retry-After (or,
without that header, a "Please try again in 300ms" hint in the error body, as OpenAI sends);
an empty answer is retried on its own budget; any other error is raised at once.

Every retry is one line (provider, status, wait) on this module's logger, or on the logger set
in ``retry_log`` (a Prefect task sets its run logger there, so the line is in the flow run's
log). The error that ends the loop carries ``attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from blocks.errors import EmptyResponse, ProviderError, RateLimited

__all__ = ["RetryPolicy", "hinted_delay", "retry_call", "retry_log"]

T = TypeVar("T")
logger = logging.getLogger("llm_conductor.retry")

#: Where retry lines go (at WARNING) instead of this module's logger, for the current context.
retry_log: ContextVar[logging.Logger | logging.LoggerAdapter[Any] | None] = ContextVar(
    "retry_log", default=None
)

# "try again in 300ms", "in 1.5s", "in 6m0s", "in 1h2m3.5s" (Go-style durations).
_HINT = re.compile(r"try again in ((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)", re.IGNORECASE)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def hinted_delay(message: str) -> float | None:
    """The wait an error message asks for ("Please try again in 1.5s"), in seconds."""
    found = _HINT.search(message)
    if found is None:
        return None
    return sum(float(n) * _UNIT[unit.lower()] for n, unit in _PART.findall(found.group(1)))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    #: Retries after transient errors (429, 5xx, timeouts, dropped connections).
    retries: int = 3
    #: Retries after an empty answer, counted separately.
    empty_retries: int = 3
    #: First backoff ceiling in seconds; doubles per attempt up to ``backoff_max``.
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    #: A Retry-After longer than this is not waited for: the error is raised instead.
    max_retry_after: float = 300.0

    def delay(self, failures: int, error: ProviderError, rng: random.Random) -> float:
        if isinstance(error, RateLimited):
            retry_after = error.retry_after
            if retry_after is None:
                retry_after = hinted_delay(str(error))
            if retry_after is not None:
                return retry_after
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        return rng.uniform(0, ceiling)


async def retry_call(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    rng: random.Random | None = None,
    on_retry: Callable[[ProviderError, float], None] | None = None,
) -> tuple[T, int]:
    """Await ``attempt()`` until it succeeds or the policy gives up.

    Returns:
        The result and the number of attempts made.

    Raises:
        ProviderError: the last error, when it is not retryable or the budget is spent.
    """
    rng = rng or random.Random()
    transient = empty = 0
    while True:
        try:
            return await attempt(), transient + empty + 1
        except ProviderError as error:
            error.attempts = transient + empty + 1
            if not error.retryable:
                raise
            if isinstance(error, EmptyResponse):
                empty += 1
                if empty > policy.empty_retries:
                    raise
                failures, budget = empty, policy.empty_retries
            else:
                transient += 1
                if transient > policy.retries:
                    raise
                failures, budget = transient, policy.retries
            delay = policy.delay(failures, error, rng)
            if delay > policy.max_retry_after:
                raise
            _log_retry(error, delay, failures, budget)
            if on_retry:
                on_retry(error, delay)
            await asyncio.sleep(delay)


def _log_retry(error: ProviderError, delay: float, failures: int, budget: int) -> None:
    status = f"status {error.status_code}" if error.status_code else type(error).__name__
    message = "%s: %s, retry %d/%d in %.2fs: %s"
    # Exception's own text: ProviderError's str() repeats the provider.
    text = Exception.__str__(error)
    args = (error.provider or "provider", status, failures, budget, delay, text)
    run_log = retry_log.get()
    if run_log is None:
        logger.info(message, *args)
        return
    run_log.warning(message, *args)
    # The log file keeps it too; Prefect's API already has it from the run logger.
    logger.debug(message, *args, extra={"send_to_api": False})
