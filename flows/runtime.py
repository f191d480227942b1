"""The Prefect API every command uses: decided once, started or connected, watched, torn down.

Which API:

1. a configured one (``PREFECT_API_URL``, or any Prefect settings source: profile, ``.env``,
   ``prefect.toml``, ``[tool.prefect]``), asked of Prefect's own settings;
2. otherwise the **managed local server**: ``prefect server start`` on 127.0.0.1 (a free
   port, SQLite and a log under the Prefect home, UI on), started by the first command that
   needs it and left running; later commands find it (a state file, a health check) and
   connect in about a second. A file lock makes two commands starting at once end up with one
   server. ``llm-conductor server start|stop|status`` manage it;
3. or, opted out with ``--ephemeral`` / ``LLM_CONDUCTOR_EPHEMERAL=1``, a throwaway API server
   for this command only (no UI), which dies with the command whatever kills it (the kernel
   kills it when its parent dies: ``PR_SET_PDEATHSIG``).

While a command runs, a thread watches the API's health: one that stops answering stops the
command (no new prompts, finished outputs kept) with exit 1 and one line saying what to do,
within 30 s (``HealthWatch``).

Deciding costs nothing when no Prefect settings source exists (the no-op batch rerun never
imports Prefect, ≈1 s); otherwise Prefect's settings are asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from blocks.errors import ConductorError
from flows.interrupt import (
    SERVER_LOST,
    on_interrupt,
    request_stop,
    reset_stop,
    server_lost,
    stop_message,
    stop_requested,
)

__all__ = [
    "EPHEMERAL_ENV",
    "EphemeralServer",
    "HealthWatch",
    "ManagedServer",
    "PrefectServerError",
    "api_in_use",
    "begin_command",
    "configured_api_url",
    "ephemeral_requested",
    "healthy",
    "prefect_runtime",
    "run_flow",
    "use_api_in_process",
]

logger = logging.getLogger("llm_conductor.runtime")
T = TypeVar("T")

#: Opt-out of the managed server: a throwaway API per command (also ``--ephemeral``).
EPHEMERAL_ENV = "LLM_CONDUCTOR_EPHEMERAL"
#: Seconds a server may take to become healthy (a busy 2-core machine needs minutes).
STARTUP_ENV = "LLM_CONDUCTOR_SERVER_STARTUP_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT = 180.0
#: The health watch: an API silent this long is lost (long enough for a busy machine's
#: server to answer again), then this long for a clean stop: exit 1 within 30 s.
LOST_AFTER = 15.0
HEALTH_TIMEOUT = 4.0
EXIT_GRACE = 8.0

STATE_FILE = "llm-conductor-server.json"
LOCK_FILE = "llm-conductor-server.lock"
LOG_FILE = "llm-conductor-server.log"


class PrefectServerError(ConductorError):
    """The Prefect API could not be started, or stopped answering mid-run."""


# -- which API -----------------------------------------------------------------------------


def ephemeral_requested() -> bool:
    return os.environ.get(EPHEMERAL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def configured_api_url() -> str | None:
    """The API URL the user configured in any Prefect settings source, or None.

    ``PREFECT_API_URL`` in the environment answers at once. Otherwise Prefect's settings are
    asked (≈1 s to import Prefect), unless Prefect is not imported yet and none of the files
    its settings come from exists: then nothing can set it.
    """
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    if "prefect" not in sys.modules and not _settings_sources_exist():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _settings_sources_exist(cwd: Path | None = None) -> bool:
    """Whether a Prefect settings source other than the environment exists: a chosen profile
    or profiles file, ``profiles.toml`` in the Prefect home, ``.env`` or ``prefect.toml`` in
    the current folder, or a ``[tool.prefect]`` table in its ``pyproject.toml``."""
    if os.environ.get("PREFECT_PROFILE") or os.environ.get("PREFECT_PROFILES_PATH"):
        return True
    here = cwd or Path.cwd()
    if (here / ".env").is_file() or (here / "prefect.toml").is_file():
        return True
    if (prefect_home() / "profiles.toml").is_file():
        return True
    return _has_tool_prefect(here / "pyproject.toml")


def _has_tool_prefect(pyproject: Path) -> bool:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # unreadable: let Prefect decide
    return "prefect" in data.get("tool", {})


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


_API_IN_USE: str | None = None
_API_SHARED = True


def api_in_use(*, shared: bool = False) -> str | None:
    """The API URL of the runtime that is running now, else the configured one.

    ``shared``: None for an ephemeral API (no other command sees it; a global concurrency
    limit there would only cost time).
    """
    if _API_IN_USE is not None:
        return _API_IN_USE if _API_SHARED or not shared else None
    return configured_api_url()


# -- servers -------------------------------------------------------------------------------


def _startup_timeout() -> float:
    try:
        return float(os.environ.get(STARTUP_ENV, DEFAULT_STARTUP_TIMEOUT))
    except ValueError:
        return DEFAULT_STARTUP_TIMEOUT


def healthy(api_url: str, timeout: float = 3.0) -> bool:
    """Whether ``{api_url}/health`` answers ``true`` (no Prefect import)."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as reply:
            return reply.status == 200 and reply.read().strip() == b"true"
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    env.update(
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL=os.environ.get("PREFECT_SERVER_LOGGING_LEVEL", "WARNING"),
    )
    return env


def _wait_healthy(api_url: str, process_alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url, timeout=2.0):
            return True
        if not process_alive():
            return False
        time.sleep(0.2)
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid: not ours unless it runs Prefect
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _kill_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after ``timeout``."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if not _pid_alive(pid):
                return
            time.sleep(0.1)


@dataclass
class ServerState:
    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ManagedServer:
    """The local Prefect server under the Prefect home, shared by every command."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or prefect_home()
        self.state_path = self.home / STATE_FILE
        self.log_path = self.home / LOG_FILE

    def state(self) -> ServerState | None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return ServerState(pid=int(data["pid"]), port=int(data["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running(self) -> ServerState | None:
        """The server's state if it runs and answers, else None."""
        state = self.state()
        if state and _pid_alive(state.pid) and healthy(state.api_url):
            return state
        return None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts the wait
            yield
        finally:
            os.close(fd)

    def ensure(self, *, announce: bool = True) -> ServerState:
        """Connect to the running server, or start it (one server however many commands)."""
        if state := self.running():
            return state
        with self._lock():
            state = self.state()
            if state and _pid_alive(state.pid):
                # Started by a command that was stopped before it saw it healthy, or slow.
                if _wait_healthy(state.api_url, lambda: _pid_alive(state.pid), _startup_timeout()):
                    return state
                _kill_group(state.pid)
            state, process = self._spawn()
            # Its own exit status, not /proc: before exec it does not look like Prefect yet.
            if not _wait_healthy(state.api_url, lambda: process.poll() is None, _startup_timeout()):
                _kill_group(state.pid)
                self.state_path.unlink(missing_ok=True)
                raise PrefectServerError(
                    f"the local Prefect server did not start within {_startup_timeout():g} s "
                    f"(log: {self.log_path}); raise {STARTUP_ENV} on a busy machine, or run "
                    "with --ephemeral"
                )
        if announce:
            print(
                f"Prefect server started: UI at {state.ui_url} "
                "(it keeps running; `llm-conductor server stop` stops it)",
                file=sys.stderr,
                flush=True,
            )
        return state

    def _spawn(self) -> tuple[ServerState, subprocess.Popen[bytes]]:
        port = _free_port()
        command = [
            *[sys.executable, "-m", "prefect", "server", "start"],
            *["--host", "127.0.0.1", "--port", str(port), "--no-background", "--analytics-off"],
        ]
        state_path, temp = str(self.state_path), str(self.state_path.with_suffix(".tmp"))

        def record_state() -> None:
            # In the child, before exec: the state file exists as soon as the server does,
            # even if this command is killed the next moment (no untracked server).
            data = json.dumps({"pid": os.getpid(), "port": port}).encode()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.close(fd)
            os.replace(temp, state_path)

        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env=_server_env(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C in the terminal is not for it
                cwd=self.home,
                preexec_fn=record_state,
            )
        return ServerState(pid=process.pid, port=port), process

    def stop(self) -> ServerState | None:
        """Stop the server if it runs; its state, or None if there was none."""
        with self._lock():
            state = self.state()
            if state is None or not _pid_alive(state.pid):
                self.state_path.unlink(missing_ok=True)
                return None
            _kill_group(state.pid)
            self.state_path.unlink(missing_ok=True)
            return state


class EphemeralServer:
    """Prefect's API for one command only, killed by the kernel when its parent dies.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started it ends: start it from the
    main thread (``spawn``), wait for it from anywhere (``wait``).
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def spawn(self) -> EphemeralServer:
        # Where the app lives, as Prefect starts it; found without importing Prefect, which
        # would read PREFECT_API_URL before it is set.
        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.origin is not None
        env = _server_env(self.port)
        env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
        self.process = subprocess.Popen(
            [
                *[sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent)],
                *["--factory", "prefect.server.api.server:create_app"],
                *["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error"],
                "--lifespan=on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # never the caller's pipe: it would hold it open
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        return self

    def wait(self) -> EphemeralServer:
        process = self.process
        assert process is not None
        if not _wait_healthy(self.api_url, lambda: process.poll() is None, _startup_timeout()):
            self.stop()
            raise PrefectServerError(
                f"Prefect's ephemeral API did not start within {_startup_timeout():g} s; raise "
                f"{STARTUP_ENV} on a busy machine, or use the managed server (no --ephemeral)"
            )
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            _kill_group(process.pid, timeout=5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1)


def _die_with_parent() -> Callable[[], None]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


# -- the runtime ---------------------------------------------------------------------------


class HealthWatch:
    """Watches the API while a command runs; a lost API stops the command (exit 1)."""

    def __init__(
        self, api_url: str, interval: float = 1.0, on_lost: Callable[[str], None] | None = None
    ) -> None:
        """``on_lost(message)`` instead of stopping the command: a caller that outlives its
        server (the web page)."""
        self.api_url = api_url
        self.interval = interval
        self.on_lost = on_lost
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefect-health", daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._done.wait(self.interval):
            if healthy(self.api_url, timeout=HEALTH_TIMEOUT):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= LOST_AFTER and not self._done.is_set():
                if self.on_lost is not None:
                    self.on_lost(f"the Prefect server at {self.api_url} stopped answering")
                else:
                    self._lost()
                return

    def _lost(self) -> None:
        message = (
            f"the Prefect server at {self.api_url} stopped answering; no new prompts were "
            "started and finished outputs are kept: start it again (`llm-conductor server "
            "start`, or check PREFECT_API_URL) and rerun the same command"
        )
        # Its clients would log every failed retry from now on.
        for name in ("prefect", "EventsWorker", "APILogWorker"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        if not request_stop(SERVER_LOST, message):
            return
        # The flow's engine, and Prefect's exit handlers, may keep retrying to send states and
        # events to the dead API: whatever is still running then, the command ends here.
        time.sleep(EXIT_GRACE)
        if not _LOST_REPORTED.is_set():
            os.write(2, f"Error: {message}\n".encode())
        os._exit(1)


@contextlib.contextmanager
def _using(api_url: str, *, shared: bool = True) -> Iterator[None]:
    """This process's Prefect talks to ``api_url`` while inside."""
    global _API_IN_USE, _API_SHARED
    previous_env = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url  # read when Prefect is imported (and children)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous = _API_IN_USE, _API_SHARED
    _API_IN_USE, _API_SHARED = api_url, shared
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        _API_IN_USE, _API_SHARED = previous
        if previous_env is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous_env


def use_api_in_process(api_url: str) -> None:
    """Every thread of this process that has no settings of its own uses ``api_url`` (the
    web page's flow thread: Prefect reads the environment where no settings context is)."""
    global _API_IN_USE
    os.environ["PREFECT_API_URL"] = _API_IN_USE = api_url


def _drain_events() -> None:
    """Send pending events before the end, quietly: the command's summary stays last."""
    if "prefect.events.worker" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker

    # "Still processing items: N items remaining..." every 4 s of a drain: not news.
    for name in ("EventsWorker", "APILogWorker"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        EventsWorker.drain_all(timeout=5)


@contextlib.contextmanager
def prefect_runtime(*, announce: bool = True) -> Iterator[str]:
    """The API for the flows run inside (see the module docstring); yields its URL."""
    from blocks import _prefect_env  # noqa: F401  (quiet defaults, before importing Prefect)

    ephemeral: EphemeralServer | None = None
    url = configured_api_url()
    try:
        if url is None and ephemeral_requested():
            ephemeral = EphemeralServer().spawn()  # stopped below even if Ctrl-C'd while it starts
            url = ephemeral.wait().api_url
        elif url is None:
            url = ManagedServer().ensure(announce=announce).api_url
        with _using(url, shared=ephemeral is None), HealthWatch(url):
            try:
                yield url
            finally:
                if not server_lost():
                    _drain_events()
    finally:
        if ephemeral is not None:
            ephemeral.stop()


def run_flow(start: Callable[[], Awaitable[T]]) -> T:
    """Run ``start()`` (a flow call) on a new event loop, stoppable from its first moment.

    Raises:
        KeyboardInterrupt: Stopped by a signal (the CLI exits 128 + its number).
        PrefectServerError: Stopped because the API stopped answering.
    """

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        with on_interrupt(task.cancel):
            return await start()

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise stopped_error() from None
    except BaseException as error:
        from prefect.exceptions import CancelledRun

        # A stopped flow returns a Cancelled state (tasks.stopping), which the call raises as
        # CancelledRun; TerminationSignal is Prefect's SIGTERM handler, before our run took
        # SIGTERM back (flows.interrupt).
        terminated = type(error).__name__ == "TerminationSignal" and stop_requested()
        if isinstance(error, CancelledRun) or terminated:
            raise stopped_error() from None
        raise


#: Set once the command's own error line says the server was lost.
_LOST_REPORTED = threading.Event()


def stopped_error() -> BaseException:
    """The exception for a command that was asked to stop."""
    if server_lost():
        _LOST_REPORTED.set()  # the caller reports it
        return PrefectServerError(stop_message())
    return KeyboardInterrupt()


def begin_command() -> None:
    """A command starts: forget an earlier command's stop request (same process: tests, the
    Python API). A signal before this point has raised ``KeyboardInterrupt`` already."""
    reset_stop()
