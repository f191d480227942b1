"""A stopped run's in-flight task runs end Cancelled, not Crashed.

Ctrl-C, the web page's Stop and a cancelled flow run all arrive as an ``asyncio``
cancellation. Prefect records a task run that a ``CancelledError`` escapes from as *Crashed*
("Execution was cancelled by the runtime environment"), which reads like a fault in the UI.
A task body that awaits its work through ``until_stopped`` returns a *Cancelled* state
instead; the caller awaits the task through ``stop_propagates``, which turns that state
(Prefect hands a state returned by a task body back to the caller as is) into the
cancellation again, so stopping works exactly as before. A flow body does the same, so the
flow run ends Cancelled too; its caller then gets Prefect's ``CancelledRun``.

Prefect caches what a cached task's body returns, a state included; a stopped body turns
off its task run's cache write, so the next run asks again instead of reading "stopped".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar, cast

from prefect.states import Cancelled, State
from prefect.transactions import get_transaction

__all__ = ["STOPPED", "stop_propagates", "until_stopped"]

T = TypeVar("T")

STOPPED = "stopped: the run was interrupted while this call was in flight"


async def until_stopped(work: Awaitable[T], message: str = STOPPED) -> T:
    """In a task or flow body: the result of ``work``, or a Cancelled state (with
    ``message``) if the run is stopped.

    The state goes to Prefect's engine, which records it and hands it to the caller, where
    ``stop_propagates`` turns it back into the cancellation; hence the cast.
    """
    try:
        return await work
    except asyncio.CancelledError:
        if (transaction := get_transaction()) is not None:
            transaction.write_on_commit = False
        return cast(T, Cancelled(message=message))


async def stop_propagates(task_call: Awaitable[T]) -> T:
    """Await a task whose body uses ``until_stopped``; its Cancelled end cancels the caller."""
    result = await task_call
    if isinstance(result, State) and result.is_cancelled():
        raise asyncio.CancelledError(STOPPED)
    return result
