"""Stopping a command: Ctrl-C, SIGTERM or a lost Prefect server, at any moment, one place.

The commands install ``install_signal_handlers`` first thing. Until a run's event loop
registers a stop callback (imports, starting a Prefect server), a signal raises
``KeyboardInterrupt`` where the main thread is, as Python's default does; once callbacks are
registered (``on_interrupt``), a signal only calls them, in their loops: they stop new work
directly and cancel the run. A cancellation alone is not enough: asyncio's default answer to
SIGINT cancels the main task once, and one library on the way that swallows that
cancellation (seen under load: a batch ran to the end after Ctrl-C, exit 0) made the command
ignore Ctrl-C. A callback registered after the stop was asked for is called at once, so a
signal that arrives while Prefect is still starting the flow run is not lost either.

A second signal while stopping exits at once. Exit codes: 130 for SIGINT, 143 for SIGTERM,
1 for a lost Prefect server (``stop_exit_code``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "StopRequest",
    "install_signal_handlers",
    "on_interrupt",
    "request_stop",
    "reset_stop",
    "server_lost",
    "stop_exit_code",
    "stop_message",
    "stop_requested",
]

#: Why the command stops: a signal number, or this for a Prefect server that stopped answering.
SERVER_LOST = "server-lost"


@dataclass
class StopRequest:
    """The process's one stop request (``None`` reason: none yet)."""

    reason: int | str | None = None
    message: str = ""
    callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = field(
        default_factory=list
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


_STOP = StopRequest()
#: Loops where ``on_interrupt`` added asyncio's SIGINT handler (once per loop, nested uses).
_LOOP_HANDLERS: set[asyncio.AbstractEventLoop] = set()


def stop_requested() -> bool:
    """Whether the command is stopping (a signal, or the Prefect server lost)."""
    return _STOP.reason is not None


def server_lost() -> bool:
    """Whether the command stops because its Prefect API stopped answering."""
    return _STOP.reason == SERVER_LOST


def stop_exit_code() -> int:
    """The exit code of the stop asked for: 128 + the signal, 1 for a lost server."""
    if isinstance(_STOP.reason, int):
        return 128 + _STOP.reason
    return 1 if _STOP.reason == SERVER_LOST else 130


def stop_message() -> str:
    return _STOP.message


def request_stop(reason: int | str, message: str = "") -> bool:
    """Ask the command to stop; True if this is the first request. Callbacks run in their
    loops (thread-safe; also callable from a signal handler)."""
    with _STOP.lock:
        if _STOP.reason is not None:
            return False
        _STOP.reason, _STOP.message = reason, message
        callbacks = list(_STOP.callbacks)
    for loop, callback in callbacks:
        with contextlib.suppress(RuntimeError):  # that loop is closed: nothing left to stop
            loop.call_soon_threadsafe(callback)
    return True


def reset_stop() -> None:
    """Forget a stop request (a process that runs several commands: tests, the web page)."""
    with _STOP.lock:
        _STOP.reason, _STOP.message = None, ""


def _handle(signum: int, _frame: object) -> None:
    if stop_requested() and isinstance(_STOP.reason, int):
        os.write(2, b"Error: interrupted again: exiting now (finished outputs are kept)\n")
        os._exit(128 + signum)
    first = request_stop(signum)
    if first and not _STOP.callbacks:
        raise KeyboardInterrupt  # nothing runs yet that could stop by itself
    if first:
        os.write(2, b"stopping: no new requests, finishing up (Ctrl-C again exits at once)\n")


_INSTALLED = False


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM stop the command (main thread only; elsewhere this does nothing)."""
    global _INSTALLED
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)
    _INSTALLED = True


@contextlib.contextmanager
def on_interrupt(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` in the running loop when the command is asked to stop while inside;
    at once if it already was.

    Without ``install_signal_handlers`` (a flow run started by a worker or the web page),
    SIGINT in the main thread still reaches ``callback`` through the loop; elsewhere whoever
    owns the thread stops the run.
    """
    loop = asyncio.get_running_loop()
    entry = (loop, callback)
    added_handler = False
    # A flow run swaps SIGTERM for Prefect's handler, which raises TerminationSignal wherever
    # the main thread is (a traceback, nothing flushed): while a command's run is inside, the
    # command's handler answers it. A worker's flow run keeps Prefect's (it cancels runs so).
    sigterm = None
    if _INSTALLED and threading.current_thread() is threading.main_thread():
        sigterm = signal.signal(signal.SIGTERM, _handle)
    if signal.getsignal(signal.SIGINT) is not _handle and loop not in _LOOP_HANDLERS:
        try:
            loop.add_signal_handler(signal.SIGINT, request_stop, signal.SIGINT)
            _LOOP_HANDLERS.add(loop)
            added_handler = True
        except (ValueError, RuntimeError):  # not the main thread
            pass
    with _STOP.lock:
        _STOP.callbacks.append(entry)
        already = _STOP.reason is not None
    if already:
        loop.call_soon(callback)
    try:
        yield
    finally:
        with _STOP.lock:
            _STOP.callbacks.remove(entry)
        if added_handler:
            _LOOP_HANDLERS.discard(loop)
            loop.remove_signal_handler(signal.SIGINT)
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
