"""The web page's HTTP API (Starlette).

``GET /``                  the page (static files are in ``web/static``, nothing is fetched
                           from elsewhere)
``GET /api/state``         the whole current state as JSON
``GET /api/events``        server-sent events: ``state`` first, then changes and heartbeats
``POST /api/start``        JSON form fields; 202, or 400/409/415/503 with ``{"error": ...}``
``POST /api/stop``         cancel the run (its output files are flushed); 409 if none runs
``GET /api/files/{name}``  output.txt, output.json or metadata.json of the current/last run
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from web.hub import MAX_LAG, QUEUE_LIMIT, Hub
from web.runner import FlowThread, PrefectGate, Runner, WebError

__all__ = ["STATIC_DIR", "create_app"]

logger = logging.getLogger("llm_conductor.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    *,
    output_root: Path | str = "output",
    heartbeat: float = 2.0,
    queue_limit: int = QUEUE_LIMIT,
    max_lag: float = MAX_LAG,
    allowed_hosts: list[str] | None = None,
    default_config: str | None = None,
) -> Starlette:
    """The app; Prefect (flows/runtime.py: the configured API, else the managed local server)
    and the flow thread start with it.

    ``queue_limit`` / ``max_lag``: how many messages, or seconds, a watching page may fall
    behind before it gets the whole state again instead (``web.hub``).
    ``allowed_hosts``: Host header names served (DNS-rebinding guard); default: loopback
    names only. ``default_config``: the routing config the page proposes (default
    ``$ROUTING_CONFIG`` or ``random:random``).
    """
    hub = Hub(heartbeat=heartbeat, queue_limit=queue_limit, max_lag=max_lag)
    config = default_config or os.environ.get("ROUTING_CONFIG") or "random:random"
    hub.defaults = {"routing_config": config}
    holder: dict[str, Any] = {}

    def runner() -> Runner:
        return holder["runner"]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        hub.loop = loop
        flows = FlowThread()
        gate = PrefectGate(hub, loop)
        holder["runner"] = Runner(
            hub, gate, flows, output_root=Path(output_root), default_config=config
        )
        gate.start()
        try:
            yield
        finally:
            await holder["runner"].shutdown()
            flows.close()
            await asyncio.to_thread(gate.close)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def state(request: Request) -> Response:
        return JSONResponse(hub.state(), headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        subscriber = hub.subscribe()
        return StreamingResponse(
            hub.stream(subscriber),
            media_type="text/event-stream; charset=utf-8",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _json_body(request: Request) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            # Also keeps other web sites' plain form posts out (JSON needs a CORS preflight).
            raise WebError(415, "send the form as JSON (Content-Type: application/json)")
        body = await request.body()
        if len(body) > 64 * 1024:
            raise WebError(413, "the form is too large")
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise WebError(400, "the request body is not valid JSON") from None

    async def start(request: Request) -> Response:
        form = await _json_body(request)
        result = await runner().start(form)
        return JSONResponse(result, status_code=202)

    async def stop(request: Request) -> Response:
        await _json_body(request)
        return JSONResponse(await runner().stop(), status_code=202)

    async def files(request: Request) -> Response:
        name = request.path_params["name"]
        path = runner().output_file(name)
        media = "application/json" if name.endswith(".json") else "text/plain; charset=utf-8"
        # Read in one go: the run replaces these files atomically while it goes, and a
        # streamed FileResponse would send the new file under the old one's Content-Length.
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise WebError(404, f"{name} is not written yet") from None
        return Response(
            body,
            media_type=media,
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def on_web_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WebError)
        return _error(exc.status, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def on_crash(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error serving %s", request.url.path)
        return _error(500, f"unexpected {type(exc).__name__}; see the server log")

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/api/start", start, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/files/{name}", files),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    hosts = LOOPBACK_NAMES if allowed_hosts is None else allowed_hosts
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        exception_handlers={
            WebError: on_web_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )
    app.state.hub = hub
    app.state.runner = runner
    return app
