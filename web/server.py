"""``python -m web`` / ``llm-conductor web``: serve the live page with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["BackgroundServer", "main", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Each connection's kernel send buffer (Linux doubles it). Left to autotuning it grows to
#: megabytes, and a slow page's backlog of events hides there, unseen by the hub's lag
#: bound (a page ≈1,450 batches behind was seen); small, the backlog stays in the hub.
SEND_BUFFER = 32 * 1024


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    output_root: Path | str = "output",
    log_level: str = "warning",
) -> None:
    """Serve until Ctrl-C; a run that is going is stopped with its files flushed."""
    import uvicorn

    from flows.logs import configure_logging
    from web.app import LOOPBACK_NAMES, create_app

    configure_logging()
    sock = _listen(host, port)
    hosts = LOOPBACK_NAMES if _is_loopback(host) else ["*"]
    app = create_app(output_root=output_root, allowed_hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    print(f"llm-conductor web: http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        access_log=False,
    )
    server = _server_class()(config)
    # uvicorn re-raises the Ctrl-C it has already handled; the stop was clean.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)  # uvicorn has logged why (as uvicorn.run does)


def _server_class() -> type:
    """uvicorn's server, ending the open event streams as soon as shutdown starts (uvicorn
    waits for open responses, and an event stream never ends on its own)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            hub = getattr(getattr(self.config.app, "state", None), "hub", None)
            if hub is not None:
                hub.close_threadsafe()
            super().handle_exit(sig, frame)

    return Server


def _listen(host: str, port: int) -> socket.socket:
    """The server's bound socket (its connections inherit the small send buffer); a busy
    port or an unknown address is a usage error, said before anything starts."""
    from blocks.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UsageError(f"cannot listen on {host}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {error.strerror} (try another --port)"
        ) from None
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m web",
        description="The live topic-exploration page: start/stop runs, watch them as they go.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="default 127.0.0.1 (loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default 8080")
    parser.add_argument(
        "--output-root",
        default="output",
        help="topic folders go here, one per topic slug (default ./output)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    args = parser.parse_args(argv)
    from blocks.errors import ConductorError

    try:
        serve(args.host, args.port, output_root=args.output_root, log_level=args.log_level)
    except ConductorError as error:
        parser.exit(2, f"Error: {error}\n")


class BackgroundServer:
    """The page served by uvicorn in a thread on a free loopback port (tests, benchmarks)::

    with BackgroundServer(output_root=tmp) as server:
        httpx.get(server.url + "/api/state")
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0, **app_options: Any) -> None:
        if not _is_loopback(host):
            raise ValueError(f"BackgroundServer serves on loopback only, not {host!r}")
        self.host = host
        self._socket = _listen(host, port)
        self.port = self._socket.getsockname()[1]
        self.app_options = app_options
        self.app: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        import uvicorn

        from web.app import create_app

        self.app = create_app(**self.app_options)
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _server_class()(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="web-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        if self._server is not None and self._thread is not None:
            self._server.handle_exit(signal.SIGINT, None)
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
