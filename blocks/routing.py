"""Which provider and model serves the next call: routing configs and the four strategies.

A routing config is ``provider:model[:weight],...`` (``ROUTING_CONFIG`` /
``--routing-config``); a strategy (``ROUTING_STRATEGY`` / ``--routing-strategy``) decides how
calls are spread over those routes:

``backoff``
    Exactly one route (more is a ``UsageError``: use ``priority`` to fail over or
    ``roundrobin``/``weighted`` to spread). Retryable failures open an exponential backoff
    window with full jitter (a ``RateLimited.retry_after`` is waited instead); a success
    closes it.
``roundrobin``
    A counter, not the clock: call *i* goes to route ``i mod k``, so N calls over k routes
    give each route floor(N/k) or ceil(N/k) calls.
``priority``
    The first route, in config order, that is not cooling down. A route that fails, retryable
    or not, cools down for ``cooldown`` seconds (longer if the provider asked for a longer
    ``retry_after``) and the next one is used; it is used again once its cool-down is over (or
    after its next success). When every route is cooling, the one whose cool-down ends first.
``weighted``
    Random by weight (``random.Random(seed)``), so the shares of calls follow the weights.

Shared by all four:

* Failures are classified, never all treated as rate limits. Only a *retryable*
  ``ProviderError`` (``.retryable``: 429, 5xx, time-outs, empty answers) counts towards
  backoff. ``AuthenticationFailed`` and ``BadRequest`` are not retryable: ``call_with_routing``
  does not repeat them on the same route, and ``priority`` fails over.
* Backoff is per router, shared by every concurrent caller: after a streak of retryable
  failures longer than ``len(routes) - 1`` (with several routes the retry simply goes to
  another route first), ``delay_before_next()`` returns the rest of a window of
  ``uniform(0, min(max_delay, base_delay * 2**n))`` seconds, or of the provider's
  ``retry_after``. A success resets the streak and closes the window.
* ``roundrobin`` and ``weighted`` also skip, while it lasts, a route that failed
  authentication (for ``cooldown``) or asked for a ``retry_after``.
* Every router takes a ``clock`` (``time.monotonic``), so tests need no sleeping.

Routers keep plain state without locks: use one from one event loop (``asyncio`` tasks may
share it; threads may not).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from blocks.errors import (
    AuthenticationFailed,
    ProviderError,
    RateLimited,
    UnknownProvider,
    UsageError,
)

__all__ = [
    "DEFAULT_BASE_DELAY",
    "DEFAULT_COOLDOWN",
    "DEFAULT_MAX_DELAY",
    "STRATEGIES",
    "BackoffRouter",
    "NoRouteAvailable",
    "PriorityRouter",
    "RoundRobinRouter",
    "Route",
    "Router",
    "WeightedRouter",
    "call_with_routing",
    "make_router",
    "parse_routing_config",
]

logger = logging.getLogger("llm_conductor.routing")

T = TypeVar("T")
Clock = Callable[[], float]

#: The strategy names ``make_router`` accepts.
STRATEGIES = ("backoff", "roundrobin", "priority", "weighted")
#: Seconds a failed route sits out under ``priority`` (and an auth failure elsewhere).
DEFAULT_COOLDOWN = 30.0
#: First backoff ceiling, in seconds; it doubles with each further retryable failure.
DEFAULT_BASE_DELAY = 1.0
#: Highest backoff ceiling, in seconds (a provider's ``retry_after`` may be longer).
DEFAULT_MAX_DELAY = 60.0


@dataclass(frozen=True)
class Route:
    """One provider and model calls can be sent to."""

    provider: str
    model: str
    weight: float = 1.0

    @property
    def label(self) -> str:
        """``provider:model``, as written in a routing config."""
        return f"{self.provider}:{self.model}"

    def __str__(self) -> str:
        return self.label


class NoRouteAvailable(LookupError):
    """Every route of the router is excluded from this choice."""


# --------------------------------------------------------------------------------------------
# Config parsing
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan)", re.IGNORECASE
)


def parse_routing_config(
    text: str, *, known_providers: Collection[str] | None = None
) -> list[Route]:
    """Parse ``provider:model[:weight],...`` into routes, in order.

    Whitespace around names, colons and commas is ignored; provider names are lower-cased,
    model names kept as written. The model may contain ``/`` and ``:``
    (``openrouter:anthropic/claude-3.5-sonnet:0.3``, ``ollama:llama3:8b``): the last
    ``:``-part is the weight only if it is a number. A model whose tag is a plain number
    therefore needs an explicit weight: ``ollama:qwen:7:1`` is model ``qwen:7``, weight 1.

    Args:
        text: the config, e.g. ``"openai:gpt-4o-mini:0.7, gemini:gemini-pro:0.3"``.
        known_providers: when given, every provider must be one of these.

    Returns:
        The routes (weight 1.0 when not written).

    Raises:
        UsageError: empty config or entry, missing provider or model, whitespace inside a
            name, a weight that is not a positive finite number, the same provider:model
            twice. ``UnknownProvider`` (a ``UsageError``) names the valid providers.

    Example:
        >>> [r.label for r in parse_routing_config("openai:gpt-4o-mini, ollama:llama3:8b")]
        ['openai:gpt-4o-mini', 'ollama:llama3:8b']
    """
    if not text or not text.strip():
        raise UsageError(
            "routing config is empty: give provider:model[:weight],... (e.g. openai:gpt-4o-mini)"
        )
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            raise UsageError(
                f"routing config {text.strip()!r}: entry {position} is empty "
                "(remove the extra comma)"
            )
        route = _parse_entry(entry)
        if (route.provider, route.model) in seen:
            raise UsageError(
                f"routing config: {route.label} is listed twice; list each provider:model once "
                "(use a weight to favour it)"
            )
        seen.add((route.provider, route.model))
        routes.append(route)
    if known_providers is not None:
        known = {p.lower() for p in known_providers}
        for route in routes:
            if route.provider not in known:
                raise UnknownProvider(
                    f"routing config: unknown provider {route.provider!r} in {route.label}; "
                    f"valid providers: {', '.join(sorted(known)) or '(none)'}"
                )
    return routes


def _parse_entry(entry: str) -> Route:
    provider, colon, rest = entry.partition(":")
    provider = provider.strip().lower()
    if not colon:
        raise UsageError(
            f"routing config: {entry!r} is not provider:model[:weight] (e.g. openai:gpt-4o-mini)"
        )
    if not provider:
        raise UsageError(f"routing config: {entry!r} has no provider before the ':'")
    weight = 1.0
    model = rest.strip()
    head, colon, last = rest.rpartition(":")
    if colon and _NUMBER.fullmatch(last.strip()):
        model = head.strip()
        weight = float(last.strip())
        if not math.isfinite(weight) or weight <= 0:
            raise UsageError(
                f"routing config: {entry!r} has weight {last.strip()}; "
                "a weight must be a number > 0"
            )
    if not model:
        raise UsageError(f"routing config: {entry!r} has no model after {provider!r}")
    for what, name in (("provider", provider), ("model", model)):
        if any(ch.isspace() for ch in name):
            raise UsageError(
                f"routing config: {what} {name!r} contains whitespace; "
                "separate entries with ',' and parts with ':'"
            )
    if ":" in model:
        model = ":".join(part.strip() for part in model.split(":"))
        if not all(model.split(":")):
            raise UsageError(f"routing config: {entry!r} has an empty part in its model name")
    return Route(provider, model, weight)


# --------------------------------------------------------------------------------------------
# Routers
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Router(Protocol):
    """A routing strategy: which route takes the next call, and what failures mean."""

    strategy: str
    routes: tuple[Route, ...]

    def choose(self, exclude: Collection[Route] = ()) -> Route:
        """The route for the next call; raises ``NoRouteAvailable`` if all are excluded."""
        ...

    def report_success(self, route: Route) -> None:
        """The call on ``route`` succeeded."""
        ...

    def report_failure(self, route: Route, error: BaseException) -> None:
        """The call on ``route`` failed with ``error``."""
        ...

    def delay_before_next(self) -> float:
        """Seconds to wait before the next call (0 when none is needed)."""
        ...


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and bool(error.retryable)


def _retry_after(error: BaseException) -> float | None:
    if isinstance(error, RateLimited) and error.retry_after is not None:
        value = float(error.retry_after)
        if math.isfinite(value) and value >= 0:
            return value
    return None


class _BaseRouter:
    """Shared state: routes, clock, jittered backoff window, per-route cool-downs."""

    strategy = ""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        cooldown: float = DEFAULT_COOLDOWN,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        if not routes:
            raise UsageError(f"routing strategy {self.strategy!r} needs at least one route")
        if len(set(routes)) != len(routes):
            raise UsageError(f"routing strategy {self.strategy!r}: a route is listed twice")
        settings = (("cooldown", cooldown), ("base_delay", base_delay), ("max_delay", max_delay))
        for name, value in settings:
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"routing: {name} must be a number >= 0, got {value!r}")
        self.routes = tuple(routes)
        self.cooldown = cooldown
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._streak = 0
        self._not_before = -math.inf
        self._cool_until: dict[Route, float] = {}
        #: The delay chosen after the last retryable failure (for logs and tests).
        self.last_delay = 0.0
        self._setup()

    def _setup(self) -> None:
        """Strategy-specific checks and state."""

    # -- backoff ---------------------------------------------------------------------------

    def delay_before_next(self) -> float:
        return max(0.0, self._not_before - self._clock())

    def backoff_ceiling(self, streak: int) -> float:
        """Upper bound of the jittered delay after ``streak`` backoff-counting failures."""
        if streak <= 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** min(streak - 1, 60))

    def _free_failures(self) -> int:
        # With k routes, k - 1 failures in a row are simply retried elsewhere.
        return len(self.routes) - 1

    def report_success(self, route: Route) -> None:
        self._streak = 0
        self._not_before = -math.inf
        self._cool_until.pop(route, None)

    def report_failure(self, route: Route, error: BaseException) -> None:
        self._cool(route, error)
        if not _is_retryable(error):
            return  # never a rate limit: no backoff for auth errors or bad requests
        self._streak += 1
        counted = self._streak - self._free_failures()
        if counted <= 0:
            return
        retry_after = _retry_after(error)
        if retry_after is not None:
            delay = retry_after
        else:
            delay = self._rng.uniform(0.0, self.backoff_ceiling(counted))
        self.last_delay = delay
        self._not_before = max(self._not_before, self._clock() + delay)

    # -- cool-downs ------------------------------------------------------------------------

    def _cool(self, route: Route, error: BaseException) -> None:
        """Default: skip a route that failed authentication, or asked for a pause."""
        seconds = 0.0
        if isinstance(error, AuthenticationFailed):
            seconds = self.cooldown
        retry_after = _retry_after(error)
        if retry_after is not None and len(self.routes) > 1:
            seconds = max(seconds, retry_after)
        if seconds > 0:
            self._put_to_cool(route, seconds)

    def _put_to_cool(self, route: Route, seconds: float) -> None:
        until = self._clock() + seconds
        self._cool_until[route] = max(self._cool_until.get(route, -math.inf), until)

    def cooling(self, route: Route) -> bool:
        """Whether ``route`` is in a cool-down now."""
        until = self._cool_until.get(route)
        if until is None:
            return False
        if until <= self._clock():
            del self._cool_until[route]
            return False
        return True

    def _soonest(self, candidates: Sequence[Route]) -> Route:
        """Of routes that are all cooling, the one whose cool-down ends first."""
        return min(candidates, key=lambda r: self._cool_until.get(r, -math.inf))

    def _allowed(self, exclude: Collection[Route]) -> list[Route]:
        allowed = [r for r in self.routes if r not in exclude] if exclude else list(self.routes)
        if not allowed:
            raise NoRouteAvailable(
                f"no route left to try ({', '.join(r.label for r in self.routes)})"
            )
        return allowed

    def __repr__(self) -> str:
        routes = ",".join(r.label for r in self.routes)
        return f"{type(self).__name__}({routes})"


class BackoffRouter(_BaseRouter):
    """One route; exponential backoff with full jitter on retryable failures."""

    strategy = "backoff"

    def _setup(self) -> None:
        if len(self.routes) > 1:
            raise UsageError(
                f"routing strategy 'backoff' takes exactly one route, got {len(self.routes)} "
                f"({', '.join(r.label for r in self.routes)}); use 'priority' to fail over or "
                "'roundrobin'/'weighted' to spread calls"
            )

    def choose(self, exclude: Collection[Route] = ()) -> Route:
        return self._allowed(exclude)[0]


class RoundRobinRouter(_BaseRouter):
    """Route ``i mod k`` for the i-th call (a counter, never the clock)."""

    strategy = "roundrobin"

    def _setup(self) -> None:
        self._next = 0

    def choose(self, exclude: Collection[Route] = ()) -> Route:
        allowed = self._allowed(exclude)
        k = len(self.routes)
        for _ in range(k):
            route = self.routes[self._next % k]
            self._next += 1
            if route in allowed and not self.cooling(route):
                return route
        return self._soonest(allowed)


class PriorityRouter(_BaseRouter):
    """The first route, in order, that is not cooling down after a failure."""

    strategy = "priority"

    def _cool(self, route: Route, error: BaseException) -> None:
        # Any failure, retryable or not, sends the route to cool down.
        self._put_to_cool(route, max(self.cooldown, _retry_after(error) or 0.0))

    def choose(self, exclude: Collection[Route] = ()) -> Route:
        allowed = self._allowed(exclude)
        for route in allowed:
            if not self.cooling(route):
                return route
        return self._soonest(allowed)


class WeightedRouter(_BaseRouter):
    """A random route, each drawn with probability weight / total weight."""

    strategy = "weighted"

    def _setup(self) -> None:
        for route in self.routes:
            if not (math.isfinite(route.weight) and route.weight > 0):
                raise UsageError(
                    f"routing: {route.label} has weight {route.weight!r}; "
                    "a weight must be a number > 0"
                )
        self._cumulative = _cumulative(self.routes)

    def choose(self, exclude: Collection[Route] = ()) -> Route:
        if not exclude and not self._cool_until:
            return self._draw(self.routes, self._cumulative)
        allowed = self._allowed(exclude)
        healthy = [r for r in allowed if not self.cooling(r)]
        if not healthy:
            return self._soonest(allowed)
        return self._draw(healthy, _cumulative(healthy))

    def _draw(self, routes: Sequence[Route], cumulative: list[float]) -> Route:
        point = self._rng.random() * cumulative[-1]
        return routes[min(bisect.bisect_right(cumulative, point), len(routes) - 1)]


def _cumulative(routes: Sequence[Route]) -> list[float]:
    total = 0.0
    out = []
    for route in routes:
        total += route.weight
        out.append(total)
    return out


_ROUTER_CLASSES: dict[str, type[_BaseRouter]] = {
    "backoff": BackoffRouter,
    "roundrobin": RoundRobinRouter,
    "priority": PriorityRouter,
    "weighted": WeightedRouter,
}


def make_router(
    strategy: str,
    routes: Sequence[Route],
    *,
    seed: int | None = None,
    cooldown: float = DEFAULT_COOLDOWN,
    clock: Clock = time.monotonic,
    base_delay: float = DEFAULT_BASE_DELAY,
    max_delay: float = DEFAULT_MAX_DELAY,
) -> Router:
    """Build the router for ``strategy`` (one of ``STRATEGIES``, case-insensitive).

    Args:
        strategy: ``backoff``, ``roundrobin``, ``priority`` or ``weighted``.
        routes: from ``parse_routing_config``.
        seed: seeds the router's ``random.Random`` (weighted draws and backoff jitter).
        cooldown: seconds a failed route sits out (see the module docstring).
        clock: monotonic seconds; tests pass a fake one.
        base_delay: first backoff ceiling, in seconds.
        max_delay: highest backoff ceiling, in seconds.

    Raises:
        UsageError: an unknown strategy (the message lists the four), no routes, or more than
            one route for ``backoff``.

    Example:
        >>> router = make_router("roundrobin", parse_routing_config("a:x,b:y"))
        >>> [router.choose().label for _ in range(3)]
        ['a:x', 'b:y', 'a:x']
    """
    name = strategy.strip().lower()
    cls = _ROUTER_CLASSES.get(name)
    if cls is None:
        raise UsageError(
            f"unknown routing strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    if name != "weighted" and any(r.weight != 1.0 for r in routes):
        logger.warning("routing strategy %r ignores the weights in the routing config", name)
    router: Router = cls(
        routes,
        clock=clock,
        rng=random.Random(seed),
        cooldown=cooldown,
        base_delay=base_delay,
        max_delay=max_delay,
    )
    return router


# --------------------------------------------------------------------------------------------
# One call through a router
# --------------------------------------------------------------------------------------------


async def call_with_routing(
    router: Router,
    call: Callable[[Route], Awaitable[T]],
    *,
    max_attempts: int = 3,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> tuple[T, Route]:
    """Make one call through ``router``, retrying where that can help.

    Before each attempt it waits ``router.delay_before_next()`` (a backoff window other
    concurrent callers may have opened), picks a route and awaits ``call(route)``, then
    reports the outcome to the router.

    * A retryable ``ProviderError`` is tried again, up to ``max_attempts`` calls in all.
    * A non-retryable ``ProviderError`` (``AuthenticationFailed``, ``BadRequest``...) is never
      treated as a rate limit: no backoff, and that route is not tried again by this call. If
      another route is left (and attempts remain) the call goes there; otherwise the error is
      raised as it is.
    * Any other exception (including cancellation) propagates at once, unreported.

    When attempts run out, the last ``ProviderError`` is raised unchanged, with a note listing
    the earlier attempts.

    Args:
        router: from ``make_router``.
        call: makes one attempt on the given route.
        max_attempts: most calls made, whatever route they go to (>= 1).
        sleep: awaited with the delay in seconds; tests pass a fake one.

    Returns:
        ``(result, route)``: what ``call`` returned and the route that produced it.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    excluded: set[Route] = set()
    history: list[str] = []
    last_error: ProviderError | None = None
    for attempt in range(max_attempts):
        delay = router.delay_before_next()
        if delay > 0:
            await sleep(delay)
        try:
            route = router.choose(excluded)
        except NoRouteAvailable:
            break
        try:
            result = await call(route)
        except ProviderError as error:
            router.report_failure(route, error)
            history.append(f"{route.label}: {type(error).__name__}: {error}")
            # One line per failed call (a 429 is news, its traceback is not).
            logger.warning("%s (call %d of at most %d)", history[-1], attempt + 1, max_attempts)
            last_error = error
            if not _is_retryable(error):
                excluded.add(route)
            continue
        router.report_success(route)
        return result, route
    assert last_error is not None  # the loop ran at least once and never succeeded
    if len(history) > 1:
        last_error.add_note(f"{len(history)} attempts: " + " | ".join(history))
    raise last_error
