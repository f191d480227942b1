"""A provider block's limits: requests in flight, requests/min and tokens/min, and, with a
Prefect server, the block's global concurrency limit shared by every run on any machine.

``LLMProvider.gate()`` hands out the block's ``ProviderGate``; every flow goes through it, so
every flow gets the same limits. A gate lives on one event loop (asyncio primitives are bound
to the loop that first uses them): there is one per limit key and loop.

The block's limit is its ``parallelism``; without one, the kind's default, raised to what a
run asks for (``-j``, ``--producers``) when it asks for more. With a server it is the global
concurrency limit named by ``limit_key``: created at the block's value, and set to it again
only when that value changed since it was last applied (recorded in a Prefect variable of
the same name), so a size edited in the UI stays until the block changes. A run that asks
for more than the limit runs at the limit and says so on stderr.

Prefect is imported only when a server is asked about (this module is also used by
planning, which never imports Prefect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from blocks.config import ProviderConfig

__all__ = ["ProviderGate", "RunLimits", "block_limit", "estimate_tokens", "gate_for", "limit_key"]

logger = logging.getLogger("llm_conductor.limits")

_PREFIX = "llm-provider-"


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate (about 4 characters per token) for budgeting only."""
    return max(1, len(text) // 4)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def limit_key(provider: ProviderConfig) -> str:
    """The name of the block's limit: ``llm-provider-block-<name>`` for a saved block,
    ``llm-provider-<kind>-<model>[-at-<endpoint>]`` for one built in code or from the
    environment (two such blocks share a limit only when they call the same model at the
    same place)."""
    name = getattr(provider, "_block_document_name", None)
    if name and not getattr(provider, "_is_anonymous", False):
        return f"{_PREFIX}block-{_slug(name)}"
    key = f"{_PREFIX}{_slug(provider.kind)}-{_slug(provider.model_name or 'default')}"
    if endpoint := provider.resolved_api_base():
        key += "-at-" + _slug(endpoint.split("://", 1)[-1])
    return key


@dataclass(frozen=True)
class RunLimits:
    """What one run may use: how many workers, and the global limits each one holds a slot
    of while it runs (none without a server)."""

    workers: int
    global_limits: tuple[str, ...] = ()


class ProviderGate:
    """Admission control for one block: a bound on requests in flight (resized to the global
    limit's size when a server has one) plus optional rate limiters."""

    def __init__(
        self,
        key: str,
        limit: int,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        self.key = key
        self.limit = limit
        self.in_flight = 0
        self._free = asyncio.Condition()
        self._rates: tuple[int | None, int | None] = (None, None)
        self._requests: AsyncLimiter | None = None
        self._tokens: AsyncLimiter | None = None
        self.set_rates(requests_per_minute, tokens_per_minute)

    def set_rates(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        if self._rates == (requests_per_minute, tokens_per_minute):
            return
        self._rates = (requests_per_minute, tokens_per_minute)
        self._requests = AsyncLimiter(requests_per_minute, 60) if requests_per_minute else None
        self._tokens = AsyncLimiter(tokens_per_minute, 60) if tokens_per_minute else None

    async def resize(self, limit: int) -> None:
        async with self._free:
            self.limit = limit
            self._free.notify_all()

    @contextlib.asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[None]:
        """Wait for a free slot and the rate budget, then hold the slot for one call."""
        async with self._free:
            await self._free.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            if self._requests:
                await self._requests.acquire()
            if self._tokens and estimated_tokens:
                await self._tokens.acquire(min(estimated_tokens, self._tokens.max_rate))
            yield
        finally:
            async with self._free:
                self.in_flight -= 1
                self._free.notify()

    async def spend_tokens(self, actual: int, estimated: int) -> None:
        """Charge the tokens/minute budget for what a call used beyond its estimate."""
        if self._tokens and actual > estimated:
            await self._tokens.acquire(min(actual - estimated, self._tokens.max_rate))

    async def plan_run(
        self, provider: ProviderConfig, requested: int | None, option: str = "-j"
    ) -> RunLimits:
        """The workers a run asking for ``requested`` (None: the block's limit) may start,
        and the global limit they hold slots of. With a server, its limit is created or
        brought up to date first, and its size (perhaps edited in the UI) is the bound."""
        value = block_limit(provider, requested)
        name = None
        size = value
        if _server_configured():
            name = limit_key(provider)
            size = await _ensure_global_limit(name, value)
        await self.resize(max(1, size))
        wanted = requested or value
        if requested and requested > self.limit:
            where = f"global concurrency limit {name}" if name else f"of {provider.label}"
            logger.warning(
                "%s %d is above the block's limit of %d (%s): running %d",
                option,
                wanted,
                self.limit,
                where,
                self.limit,
            )
        return RunLimits(min(wanted, self.limit), (name,) if name else ())


def block_limit(provider: ProviderConfig, requested: int | None = None) -> int:
    """The block's limit for a run asking for ``requested``: its ``parallelism``, else the
    kind's default raised to ``requested``."""
    if provider.parallelism is not None:
        return provider.parallelism
    return max(provider.spec.parallelism, requested or 0)


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ProviderGate]] = (
    weakref.WeakKeyDictionary()
)


def gate_for(provider: ProviderConfig) -> ProviderGate:
    """The gate shared by every call to the block on the running loop."""
    key = limit_key(provider)
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = ProviderGate(
            key,
            block_limit(provider),
            provider.requests_per_minute,
            provider.tokens_per_minute,
        )
    else:
        gate.set_rates(provider.requests_per_minute, provider.tokens_per_minute)
    return gate


def _server_configured() -> bool:
    """Whether Prefect talks to a server (an ephemeral API's limits would die with it)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


async def _ensure_global_limit(name: str, value: int) -> int:
    """Create the limit at ``value``, or set it to ``value`` when the block's value changed
    since it was last applied; otherwise leave its size alone (edited in the UI, or made
    there before the first run). Returns its size."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        VariableCreate,
        VariableUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        record = await client.read_variable_by_name(name)
        applied = record.value if record is not None else None
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=value)
                )
            size = value
        else:
            size = limit.limit
            if applied is not None and applied != value and size != value:
                await client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=value)
                )
                size = value
        if applied != value:
            if record is None:
                with contextlib.suppress(ObjectAlreadyExists):
                    await client.create_variable(
                        VariableCreate(name=name, value=value, tags=["llm-conductor"])
                    )
            else:
                await client.update_variable(VariableUpdate(name=name, value=value))
    return size
