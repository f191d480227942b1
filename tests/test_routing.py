"""blocks.routing: config parsing, the four strategies, and call_with_routing."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter

import pytest

from blocks.errors import (
    AuthenticationFailed,
    BadRequest,
    CliProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownProvider,
    UsageError,
)
from blocks.routing import (
    STRATEGIES,
    BackoffRouter,
    NoRouteAvailable,
    PriorityRouter,
    RoundRobinRouter,
    Route,
    Router,
    WeightedRouter,
    call_with_routing,
    make_router,
    parse_routing_config,
)

A = Route("openai", "gpt-4o-mini")
B = Route("anthropic", "claude-3-sonnet")
C = Route("gemini", "gemini-pro")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records the delays and moves the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


class MaxJitter(random.Random):
    """Full jitter that always draws the ceiling, so the delays are predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Script:
    """A fake provider call: each route answers from its own queue of outcomes."""

    def __init__(self, **outcomes: list[object]) -> None:
        self.outcomes = {label: list(values) for label, values in outcomes.items()}
        self.calls: list[str] = []

    async def __call__(self, route: Route) -> str:
        self.calls.append(route.provider)
        queue = self.outcomes.get(route.provider, [])
        outcome = queue.pop(0) if queue else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return f"{outcome} from {route.provider}"


# --------------------------------------------------------------------------------------------
# Route and parse_routing_config
# --------------------------------------------------------------------------------------------


def test_route_label() -> None:
    route = Route("openrouter", "anthropic/claude-3.5-sonnet", 0.3)
    assert route.label == "openrouter:anthropic/claude-3.5-sonnet"
    assert str(route) == route.label
    with pytest.raises(AttributeError):
        route.weight = 2  # type: ignore[misc]


def test_parse_seed_examples() -> None:
    assert parse_routing_config("openai:gpt-4o-mini") == [A]
    assert parse_routing_config(
        "openai:gpt-4o-mini,anthropic:claude-3-sonnet,gemini:gemini-pro"
    ) == [A, B, C]
    assert parse_routing_config(
        "openai:gpt-4o-mini:0.5,anthropic:claude-3-sonnet:0.3,gemini:gemini-pro:0.2"
    ) == [
        Route("openai", "gpt-4o-mini", 0.5),
        Route("anthropic", "claude-3-sonnet", 0.3),
        Route("gemini", "gemini-pro", 0.2),
    ]


def test_parse_whitespace_and_case() -> None:
    routes = parse_routing_config("  OpenAI : gpt-4o-mini : 2 ,\n gemini:gemini-pro  ")
    assert routes == [Route("openai", "gpt-4o-mini", 2.0), Route("gemini", "gemini-pro", 1.0)]


@pytest.mark.parametrize(
    ("text", "route"),
    [
        (
            "openrouter:anthropic/claude-3.5-sonnet:0.3",
            Route("openrouter", "anthropic/claude-3.5-sonnet", 0.3),
        ),
        ("openrouter:meta/llama-3", Route("openrouter", "meta/llama-3")),
        ("ollama:llama3:8b", Route("ollama", "llama3:8b")),
        ("ollama:llama3:8b:2.5", Route("ollama", "llama3:8b", 2.5)),
        ("ollama:qwen:7:1", Route("ollama", "qwen:7", 1.0)),
        ("ollama:qwen:7", Route("ollama", "qwen", 7.0)),  # a numeric last part is the weight
        ("lm_studio:org/model:q4 : 1e-1", Route("lm_studio", "org/model:q4", 0.1)),
        ("random:random", Route("random", "random")),
    ],
)
def test_parse_model_names_with_slashes_and_colons(text: str, route: Route) -> None:
    assert parse_routing_config(text) == [route]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "routing config is empty"),
        ("   ", "routing config is empty"),
        ("openai:gpt-4o,", "entry 2 is empty"),
        ("openai:gpt-4o,,gemini:pro", "entry 2 is empty"),
        ("openai", "is not provider:model"),
        (":gpt-4o", "has no provider"),
        ("openai:", "has no model"),
        ("openai: :2", "has no model"),
        ("openai:gpt-4o:0", "a weight must be a number > 0"),
        ("openai:gpt-4o:-1", "a weight must be a number > 0"),
        ("openai:gpt-4o:nan", "a weight must be a number > 0"),
        ("openai:gpt-4o:inf", "a weight must be a number > 0"),
        ("openai:gpt 4o", "contains whitespace"),
        ("open ai:gpt-4o", "contains whitespace"),
        ("openai:gpt-4o,OpenAI:gpt-4o:2", "openai:gpt-4o is listed twice"),
        ("ollama:llama3::1", "empty part in its model name"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_routing_config(text)
    assert "\n" not in str(caught.value)


def test_parse_unknown_provider_lists_the_valid_ones() -> None:
    known = ["openai", "anthropic", "gemini"]
    assert parse_routing_config("gemini:gemini-pro", known_providers=known) == [C]
    with pytest.raises(UnknownProvider) as caught:
        parse_routing_config("openai:gpt-4o,opnai:gpt-4o", known_providers=known)
    assert isinstance(caught.value, UsageError)
    assert str(caught.value) == (
        "routing config: unknown provider 'opnai' in opnai:gpt-4o; "
        "valid providers: anthropic, gemini, openai"
    )


# --------------------------------------------------------------------------------------------
# make_router
# --------------------------------------------------------------------------------------------


def test_make_router_builds_each_strategy() -> None:
    classes = {
        "backoff": BackoffRouter,
        "roundrobin": RoundRobinRouter,
        "priority": PriorityRouter,
        "weighted": WeightedRouter,
    }
    assert set(STRATEGIES) == set(classes)
    for name, cls in classes.items():
        routes = [A] if name == "backoff" else [A, B]
        router = make_router(name, routes, seed=1)
        assert type(router) is cls
        assert isinstance(router, Router)
        assert router.strategy == name
        assert router.routes == tuple(routes)
    assert type(make_router(" RoundRobin ", [A, B])) is RoundRobinRouter


def test_make_router_unknown_strategy_lists_the_four() -> None:
    with pytest.raises(UsageError) as caught:
        make_router("round-robin", [A])
    assert str(caught.value) == (
        "unknown routing strategy 'round-robin'; "
        "choose one of: backoff, roundrobin, priority, weighted"
    )


def test_make_router_rejects_bad_routes() -> None:
    with pytest.raises(UsageError, match="exactly one route, got 2"):
        make_router("backoff", [A, B])
    for name in STRATEGIES:
        with pytest.raises(UsageError, match="at least one route"):
            make_router(name, [])
    with pytest.raises(UsageError, match="listed twice"):
        make_router("roundrobin", [A, A])
    with pytest.raises(UsageError, match="cooldown"):
        make_router("priority", [A], cooldown=-1)
    with pytest.raises(UsageError, match="a weight must be a number > 0"):
        make_router("weighted", [A, Route("b", "y", 0.0)])


def test_make_router_warns_about_ignored_weights(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llm_conductor.routing"):
        make_router("roundrobin", [Route("a", "x", 0.7), Route("b", "y", 0.3)])
        make_router("weighted", [Route("a", "x", 0.7), Route("b", "y", 0.3)])
    assert [r.getMessage() for r in caplog.records] == [
        "routing strategy 'roundrobin' ignores the weights in the routing config"
    ]


# --------------------------------------------------------------------------------------------
# Distribution of each strategy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 10, 11, 100, 1001])
def test_roundrobin_spreads_by_count_not_clock(n: int) -> None:
    clock = FakeClock()  # never moves: a wall-clock based pick would always give one route
    router = make_router("roundrobin", [A, B, C], clock=clock)
    counts = Counter(router.choose() for _ in range(n))
    assert sum(counts.values()) == n
    for route in (A, B, C):
        assert counts[route] in (n // 3, -(-n // 3))
    assert [router.choose() for _ in range(3)] != [A, A, A]


def test_roundrobin_order() -> None:
    router = make_router("roundrobin", [A, B, C])
    assert [router.choose() for _ in range(7)] == [A, B, C, A, B, C, A]


def test_priority_always_first_while_healthy() -> None:
    router = make_router("priority", [A, B, C])
    assert {router.choose() for _ in range(50)} == {A}


def test_weighted_shares_follow_weights() -> None:
    routes = parse_routing_config("openai:gpt-4o-mini:0.5,anthropic:claude:0.3,gemini:pro:0.2")
    router = make_router("weighted", routes, seed=42)
    n = 10_000
    counts = Counter(router.choose() for _ in range(n))
    assert len(counts) == 3  # the seed's fault: always one provider
    for route, expected in zip(routes, (0.5, 0.3, 0.2), strict=True):
        assert abs(counts[route] / n - expected) < 0.02, (route, counts[route])


def test_weighted_unnormalised_weights_and_seed() -> None:
    routes = [Route("a", "x", 3), Route("b", "y", 1)]
    first = make_router("weighted", routes, seed=7)
    second = make_router("weighted", routes, seed=7)
    picks = [first.choose() for _ in range(4000)]
    assert picks == [second.choose() for _ in range(4000)]
    assert abs(picks.count(routes[0]) / 4000 - 0.75) < 0.03


def test_backoff_always_its_one_route() -> None:
    router = make_router("backoff", [A])
    assert {router.choose() for _ in range(10)} == {A}
    with pytest.raises(NoRouteAvailable):
        router.choose({A})


# --------------------------------------------------------------------------------------------
# Priority fail-over and come-back (fake clock)
# --------------------------------------------------------------------------------------------


def test_priority_fails_over_and_comes_back_after_cooldown() -> None:
    clock = FakeClock()
    router = make_router("priority", [A, B, C], cooldown=30, clock=clock)
    router.report_failure(A, ProviderUnavailable("502", provider="openai"))
    assert router.choose() == B
    clock.advance(29.9)
    assert router.choose() == B
    clock.advance(0.2)
    assert router.choose() == A  # back after the cool-down


def test_priority_non_retryable_failure_also_fails_over() -> None:
    clock = FakeClock()
    router = make_router("priority", [A, B], cooldown=10, clock=clock)
    router.report_failure(A, AuthenticationFailed("401", provider="openai"))
    assert router.choose() == B
    assert router.delay_before_next() == 0  # not a rate limit: no backoff
    clock.advance(10)
    assert router.choose() == A


def test_priority_all_cooling_uses_the_one_that_ends_first() -> None:
    clock = FakeClock()
    router = make_router("priority", [A, B, C], cooldown=30, clock=clock)
    router.report_failure(B, ProviderTimeout("slow"))
    clock.advance(5)
    router.report_failure(A, ProviderTimeout("slow"))
    clock.advance(5)
    router.report_failure(C, ProviderTimeout("slow"))
    assert router.choose() == B
    clock.advance(21)  # B's cool-down is over
    assert router.choose() == B
    router.report_failure(B, ProviderTimeout("slow"))
    assert router.choose() == A  # ends at +35, C at +40, B now at +61


def test_priority_retry_after_longer_than_cooldown() -> None:
    clock = FakeClock()
    router = make_router("priority", [A, B], cooldown=30, clock=clock)
    router.report_failure(A, RateLimited("429", retry_after=120))
    clock.advance(100)
    assert router.choose() == B
    clock.advance(21)
    assert router.choose() == A


def test_priority_success_ends_cooldown() -> None:
    clock = FakeClock()
    router = make_router("priority", [A, B], cooldown=30, clock=clock)
    router.report_failure(A, ProviderTimeout("slow"))
    router.report_success(A)
    assert router.choose() == A


def test_roundrobin_and_weighted_skip_a_route_that_failed_auth() -> None:
    for name in ("roundrobin", "weighted"):
        clock = FakeClock()
        router = make_router(name, [A, B, C], cooldown=30, clock=clock, seed=3)
        router.report_failure(B, AuthenticationFailed("401", provider="anthropic"))
        assert B not in {router.choose() for _ in range(300)}
        clock.advance(31)
        assert B in {router.choose() for _ in range(300)}


def test_roundrobin_skips_a_route_that_asked_for_retry_after() -> None:
    clock = FakeClock()
    router = make_router("roundrobin", [A, B], clock=clock)
    router.report_failure(A, RateLimited("429", retry_after=5))
    assert [router.choose() for _ in range(4)] == [B, B, B, B]
    clock.advance(5)
    assert {router.choose() for _ in range(4)} == {A, B}


def test_roundrobin_and_weighted_keep_spreading_after_plain_retryable_errors() -> None:
    router = make_router("roundrobin", [A, B])
    router.report_failure(A, ProviderUnavailable("503"))
    assert [router.choose() for _ in range(4)] == [A, B, A, B]


def test_exclude_and_all_cooling_fallbacks() -> None:
    clock = FakeClock()
    for name in ("roundrobin", "priority", "weighted"):
        router = make_router(name, [A, B], clock=clock, seed=1)
        assert {router.choose({A}) for _ in range(20)} == {B}
        with pytest.raises(NoRouteAvailable):
            router.choose({A, B})
        router.report_failure(A, AuthenticationFailed("401"))
        router.report_failure(B, AuthenticationFailed("401"))
        clock.advance(1)
        assert router.choose() == A  # both cooling: A's ends first
        assert router.choose({A}) == B


# --------------------------------------------------------------------------------------------
# Backoff delays
# --------------------------------------------------------------------------------------------


def _backoff(clock: FakeClock, **options: float) -> BackoffRouter:
    return BackoffRouter([A], clock=clock, rng=MaxJitter(), **options)


def test_backoff_delays_grow_exponentially_and_are_capped() -> None:
    clock = FakeClock()
    router = _backoff(clock, base_delay=1.0, max_delay=20.0)
    assert router.delay_before_next() == 0
    delays = []
    for _ in range(7):
        router.report_failure(A, ProviderUnavailable("503"))
        delays.append(router.delay_before_next())
        clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8, 16, 20, 20]


def test_backoff_full_jitter_stays_under_the_ceiling() -> None:
    clock = FakeClock()
    router = make_router("backoff", [A], seed=5, clock=clock, base_delay=1, max_delay=60)
    for streak in range(1, 9):
        router.report_failure(A, ProviderTimeout("slow"))
        delay = router.delay_before_next()
        assert 0 <= delay <= min(60, 2 ** (streak - 1))
        clock.advance(delay)
    # Jitter means the delays are not all the ceiling.
    jittered = make_router("backoff", [A], seed=5, clock=FakeClock())
    draws = []
    for _ in range(20):
        jittered.report_failure(A, ProviderTimeout("slow"))
        draws.append(jittered.last_delay)  # type: ignore[attr-defined]
        jittered.report_success(A)
    assert len(set(draws)) > 10 and max(draws) <= 1.0


def test_backoff_honours_retry_after_and_resets_on_success() -> None:
    clock = FakeClock()
    router = _backoff(clock)
    router.report_failure(A, RateLimited("429", retry_after=7.5))
    assert router.delay_before_next() == 7.5
    clock.advance(2.5)
    assert router.delay_before_next() == 5.0  # a shared window, counting down
    clock.advance(5)
    router.report_failure(A, RateLimited("429"))  # no retry_after: the jittered delay
    assert router.delay_before_next() == 2.0
    router.report_success(A)
    assert router.delay_before_next() == 0
    router.report_failure(A, RateLimited("429"))
    assert router.delay_before_next() == 1.0  # the streak started again


def test_backoff_ignores_non_retryable_errors() -> None:
    clock = FakeClock()
    router = _backoff(clock)
    router.report_failure(A, AuthenticationFailed("401"))
    router.report_failure(A, BadRequest("400"))
    router.report_failure(A, CliProviderError("exit 1", retryable=False))
    assert router.delay_before_next() == 0


def test_several_routes_back_off_only_once_each_route_failed() -> None:
    clock = FakeClock()
    router = RoundRobinRouter([A, B, C], clock=clock, rng=MaxJitter())
    router.report_failure(A, ProviderUnavailable("503"))
    router.report_failure(B, ProviderUnavailable("503"))
    assert router.delay_before_next() == 0  # the retries go to other routes first
    router.report_failure(C, ProviderUnavailable("503"))
    assert router.delay_before_next() == 1.0
    router.report_failure(A, ProviderUnavailable("503"))
    assert router.delay_before_next() == 2.0


# --------------------------------------------------------------------------------------------
# call_with_routing
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_call_returns_result_and_route() -> None:
    router = make_router("roundrobin", [A, B])
    script = Script()
    assert await call_with_routing(router, script, max_attempts=3) == ("ok from openai", A)
    assert await call_with_routing(router, script, max_attempts=3) == ("ok from anthropic", B)


@pytest.mark.asyncio
async def test_call_retries_retryable_errors_with_backoff() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = BackoffRouter([A], clock=clock, rng=MaxJitter())
    script = Script(openai=[ProviderUnavailable("503"), ProviderTimeout("slow"), "fine"])
    result = await call_with_routing(router, script, max_attempts=5, sleep=sleep)
    assert result == ("fine from openai", A)
    assert sleep.delays == [1.0, 2.0]
    assert router.delay_before_next() == 0  # reset on success


@pytest.mark.asyncio
async def test_call_honours_retry_after() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = BackoffRouter([A], clock=clock, rng=MaxJitter())
    script = Script(openai=[RateLimited("429", retry_after=12), "fine"])
    await call_with_routing(router, script, max_attempts=2, sleep=sleep)
    assert sleep.delays == [12]


@pytest.mark.asyncio
async def test_call_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = BackoffRouter([A], clock=clock, rng=MaxJitter())
    last = RateLimited("429 again", provider="openai")
    script = Script(openai=[ProviderUnavailable("503"), ProviderTimeout("slow"), last])
    with pytest.raises(RateLimited) as caught:
        await call_with_routing(router, script, max_attempts=3, sleep=sleep)
    assert caught.value is last
    assert script.calls == ["openai"] * 3
    assert sleep.delays == [1.0, 2.0]
    assert caught.value.__notes__ == [
        "3 attempts: openai:gpt-4o-mini: ProviderUnavailable: 503 | "
        "openai:gpt-4o-mini: ProviderTimeout: slow | "
        "openai:gpt-4o-mini: RateLimited: openai: 429 again"
    ]


@pytest.mark.asyncio
async def test_auth_error_is_not_retried_as_a_rate_limit() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = BackoffRouter([A], clock=clock, rng=MaxJitter())
    error = AuthenticationFailed("401 invalid key", provider="openai", status_code=401)
    script = Script(openai=[error])
    with pytest.raises(AuthenticationFailed) as caught:
        await call_with_routing(router, script, max_attempts=5, sleep=sleep)
    assert caught.value is error
    assert script.calls == ["openai"]  # one call, no retry
    assert sleep.delays == []  # no backoff
    assert router.delay_before_next() == 0


@pytest.mark.asyncio
async def test_cli_error_follows_its_own_retryable_flag() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = BackoffRouter([A], clock=clock, rng=MaxJitter())
    script = Script(openai=[CliProviderError("crashed", retryable=True), "ok"])
    assert await call_with_routing(router, script, max_attempts=2, sleep=sleep) == (
        "ok from openai",
        A,
    )
    script = Script(openai=[CliProviderError("not logged in", retryable=False), "ok"])
    with pytest.raises(CliProviderError):
        await call_with_routing(router, script, max_attempts=2, sleep=sleep)
    assert script.calls == ["openai"]


@pytest.mark.asyncio
async def test_priority_fails_over_on_auth_error_without_waiting() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = make_router("priority", [A, B], cooldown=30, clock=clock)
    script = Script(openai=[AuthenticationFailed("401")])
    result = await call_with_routing(router, script, max_attempts=3, sleep=sleep)
    assert result == ("ok from anthropic", B)
    assert sleep.delays == []
    # While A cools down, calls go straight to B; after it, back to A.
    assert (await call_with_routing(router, script, max_attempts=3, sleep=sleep))[1] == B
    clock.advance(30)
    assert (await call_with_routing(router, script, max_attempts=3, sleep=sleep))[1] == A
    assert script.calls == ["openai", "anthropic", "anthropic", "openai"]


@pytest.mark.asyncio
async def test_priority_fails_over_on_rate_limit_without_waiting() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = make_router("priority", [A, B], clock=clock)
    script = Script(openai=[RateLimited("429", retry_after=20)])
    assert await call_with_routing(router, script, max_attempts=3, sleep=sleep) == (
        "ok from anthropic",
        B,
    )
    assert sleep.delays == []


@pytest.mark.asyncio
async def test_bad_request_tried_once_per_route_then_raised() -> None:
    router = make_router("roundrobin", [A, B])
    script = Script(openai=[BadRequest("400 too long")], anthropic=[BadRequest("400 too long")])
    with pytest.raises(BadRequest):
        await call_with_routing(router, script, max_attempts=5)
    assert script.calls == ["openai", "anthropic"]  # not 5 calls


@pytest.mark.asyncio
async def test_non_retryable_then_retryable_on_other_routes() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = PriorityRouter([A, B], clock=clock, rng=MaxJitter())
    script = Script(
        openai=[AuthenticationFailed("401")],
        anthropic=[ProviderUnavailable("503"), ProviderUnavailable("503"), "ok"],
    )
    result = await call_with_routing(router, script, max_attempts=4, sleep=sleep)
    assert result == ("ok from anthropic", B)
    assert script.calls == ["openai", "anthropic", "anthropic", "anthropic"]
    # A is excluded for this call (auth), B's streak backs off: 503 #1 is free (2 routes).
    assert sleep.delays == [1.0]


@pytest.mark.asyncio
async def test_other_exceptions_propagate_at_once_and_unreported() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = make_router("priority", [A, B], clock=clock)
    script = Script(openai=[KeyError("bug")])
    with pytest.raises(KeyError):
        await call_with_routing(router, script, max_attempts=5, sleep=sleep)
    assert script.calls == ["openai"]
    assert router.choose() == A  # not put in cool-down


@pytest.mark.asyncio
async def test_cancellation_propagates() -> None:
    router = make_router("backoff", [A])

    async def hang(route: Route) -> str:
        await asyncio.sleep(10)
        return "never"

    task = asyncio.ensure_future(call_with_routing(router, hang, max_attempts=3))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        await call_with_routing(make_router("backoff", [A]), Script(), max_attempts=0)


@pytest.mark.asyncio
async def test_concurrent_calls_share_the_roundrobin_counter() -> None:
    router = make_router("roundrobin", [A, B, C])

    async def call(route: Route) -> str:
        await asyncio.sleep(0)
        return route.provider

    results = await asyncio.gather(
        *(call_with_routing(router, call, max_attempts=1) for _ in range(30))
    )
    assert Counter(route for _, route in results) == {A: 10, B: 10, C: 10}


@pytest.mark.asyncio
async def test_concurrent_callers_wait_for_a_shared_backoff_window() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    router = BackoffRouter([A], clock=clock, rng=MaxJitter())
    router.report_failure(A, RateLimited("429", retry_after=3))
    assert await call_with_routing(router, Script(), max_attempts=1, sleep=sleep) == (
        "ok from openai",
        A,
    )
    assert sleep.delays == [3]
