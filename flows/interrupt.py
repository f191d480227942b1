"""Ctrl-C for the commands' flows, through a handler of our own.

asyncio's default answer to SIGINT cancels the main task once; one library on the way that
swallows that cancellation (seen under load: a batch ran to the end after Ctrl-C, exit 0)
makes the command ignore Ctrl-C. The callback given here also stops new work directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

__all__ = ["on_interrupt"]


@contextlib.contextmanager
def on_interrupt(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` in the running loop on each SIGINT while inside.

    Only the main thread can own SIGINT: elsewhere (a flow started by the web page) this
    does nothing and whoever owns the thread stops the run.
    """
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (ValueError, RuntimeError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
