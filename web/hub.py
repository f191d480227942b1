"""The live state of the page and its fan-out to every watching browser.

Everything here runs on the web server's event loop: the flow's events arrive through
``loop.call_soon_threadsafe`` (see ``web.runner``), so no lock is needed.

The stream protocol (server-sent events):

* every message carries ``seq``; the hub numbers its changes 1, 2, 3, ...;
* a client that connects (or reconnects) first gets ``state``: the whole current state and
  its ``seq``; then every change in order (``batch``, ``run-error``, ``status``, ...);
* each client has its own bounded queue. When a client does not keep up (``QUEUE_LIMIT``
  messages or ``MAX_LAG`` seconds behind), its queue is thrown away and it gets a fresh
  ``state`` instead: the producer side never waits for a client;
* when nothing happened for ``heartbeat`` seconds a client gets ``heartbeat`` (with the
  current ``seq``), so the page can tell a quiet run from a dead connection and reconnect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

__all__ = ["CHART_POINTS", "Hub", "Subscriber"]

#: The chart keeps at most this many points; beyond, neighbours are merged pairwise.
CHART_POINTS = 1200
#: The most recent run errors kept for the page.
RECENT_ERRORS = 30
#: Messages a client may have queued (not yet handed to its socket) before it is
#: resynchronised with a full state...
QUEUE_LIMIT = 256
#: ... or seconds the oldest of them may wait. A stream hands its socket at most CHUNK
#: characters at a time, and the server's sockets have small send buffers (``web.server``),
#: so a slow client's backlog stays in this queue, where it is bounded, and not in the kernel.
MAX_LAG = 5.0
CHUNK = 16 * 1024

ACTIVE = ("starting", "running", "stopping")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def sse(event: str, data: Any) -> str:
    """One server-sent event; JSON never holds a raw newline, so one data line suffices."""
    return f"event: {event}\ndata: {_dumps(data)}\n\n"


class Subscriber:
    """One watching page: a bounded queue of serialised messages, or a pending resync."""

    def __init__(self, limit: int = QUEUE_LIMIT, max_lag: float = MAX_LAG) -> None:
        self.limit = limit
        self.max_lag = max_lag
        self.items: deque[tuple[float, str]] = deque()  # (queued at, message)
        self.resync = True  # the first thing a client gets is the full state
        self.resyncs = 0
        self.wake = asyncio.Event()

    def lagging(self) -> bool:
        """Whether the client is ``limit`` messages or ``max_lag`` seconds behind."""
        if len(self.items) >= self.limit:
            return True
        return bool(self.items) and time.monotonic() - self.items[0][0] > self.max_lag

    def push(self, message: str) -> None:
        """Never blocks: a client that lags behind is resynchronised instead."""
        if not self.resync:
            if self.lagging():
                self.request_resync()
                self.resyncs += 1
            else:
                self.items.append((time.monotonic(), message))
        self.wake.set()

    def take(self, size: int) -> str:
        """The oldest queued messages, about ``size`` characters of them (at least one)."""
        chunk: list[str] = []
        taken = 0
        while self.items and (not chunk or taken + len(self.items[0][1]) <= size):
            message = self.items.popleft()[1]
            chunk.append(message)
            taken += len(message)
        return "".join(chunk)

    def request_resync(self) -> None:
        self.items.clear()
        self.resync = True
        self.wake.set()


def _provider_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "batches": 0,
        "failures": 0,
        "items": 0,
        "new": 0,
        "prompt_tokens": None,
        "completion_tokens": None,
        "cost": None,
        "last_error": None,
        "last_status": None,
    }


class Hub:
    """The current (or last) run as the page shows it, and the clients watching it."""

    def __init__(
        self, *, heartbeat: float = 2.0, queue_limit: int = QUEUE_LIMIT, max_lag: float = MAX_LAG
    ) -> None:
        self.heartbeat = heartbeat
        self.queue_limit = queue_limit
        self.max_lag = max_lag
        self.seq = 0
        self.run: dict[str, Any] | None = None
        self.prefect: dict[str, Any] = {"ready": False, "api_url": None, "error": None}
        self.subscribers: set[Subscriber] = set()
        #: What the page's form proposes before any run (e.g. the routing config).
        self.defaults: dict[str, Any] = {}
        self._clock = 0.0
        self._snapshot: tuple[int, str] | None = None
        self.closed = False
        #: The web server's loop, set when the app starts (for ``close_threadsafe``).
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- clients ---------------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.queue_limit, self.max_lag)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def close(self) -> None:
        """End every stream now (the server is shutting down and would otherwise wait for
        the open ones to time out)."""
        self.closed = True
        for subscriber in self.subscribers:
            subscriber.wake.set()

    def close_threadsafe(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.close)

    def state(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "heartbeat": self.heartbeat,
            "prefect": self.prefect,
            "defaults": self.defaults,
            "run": self.run,
        }

    def snapshot_message(self) -> str:
        """The ``state`` event, serialised once per change however many clients need it."""
        if self._snapshot is None or self._snapshot[0] != self.seq:
            self._snapshot = (self.seq, sse("state", self.state()))
        return self._snapshot[1]

    def heartbeat_message(self) -> str:
        status = self.run["status"] if self.run else None
        return sse("heartbeat", {"seq": self.seq, "time": time.time(), "status": status})

    async def stream(self, subscriber: Subscriber) -> AsyncIterator[str]:
        """The event stream of one client: full state first, then changes and heartbeats."""
        try:
            yield f"retry: {int(self.heartbeat * 1000)}\n\n"
            while not self.closed:
                if subscriber.lagging():  # e.g. nothing new came to notice it
                    subscriber.request_resync()
                    subscriber.resyncs += 1
                if subscriber.resync:
                    subscriber.resync = False
                    subscriber.items.clear()
                    yield self.snapshot_message()
                elif subscriber.items:
                    yield subscriber.take(CHUNK)
                else:
                    subscriber.wake.clear()
                    try:
                        await asyncio.wait_for(subscriber.wake.wait(), self.heartbeat)
                    except TimeoutError:
                        yield self.heartbeat_message()
        finally:
            self.unsubscribe(subscriber)

    def _publish(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        message = sse(event, {"seq": self.seq, **data})
        for subscriber in self.subscribers:
            subscriber.push(message)

    def _resync_all(self) -> None:
        """A change too large for a delta (a new run): every client gets the full state."""
        self.seq += 1
        for subscriber in self.subscribers:
            subscriber.request_resync()

    # -- Prefect ---------------------------------------------------------------------------

    def set_prefect(self, **fields: Any) -> None:
        self.prefect = {**self.prefect, **fields}
        self._publish("prefect", {"prefect": self.prefect})

    # -- the run ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.run is not None and self.run["status"] in ACTIVE

    def run_created(self, run_id: int, form: dict[str, Any], output_dir: str) -> None:
        self._clock = time.monotonic()
        self.run = {
            "id": run_id,
            "status": "starting",
            "message": None,
            "form": form,
            "topic": form["topic"],
            "output_dir": output_dir,
            "flow_run_id": None,
            "flow_run_url": None,
            "started_at": _now(),
            "ended_at": None,
            "metrics": None,
            "known": 0,
            "attributes": [],
            "chart": [],
            "providers": {},
            "errors": [],
            "summary": None,
            "rejected": None,
            "files": [],
        }
        self._resync_all()

    def set_status(
        self, run_id: int, status: str, message: str | None = None, **extra: Any
    ) -> None:
        run = self.run
        if run is None or run["id"] != run_id:
            return
        run["status"] = status
        run["message"] = message
        run.update(extra)
        self._publish("status", {"run": self._header()})

    def _header(self) -> dict[str, Any]:
        """The run's small fields (everything but attributes, chart, providers and errors)."""
        assert self.run is not None
        big = ("attributes", "chart", "providers", "errors")
        return {k: v for k, v in self.run.items() if k not in big}

    def on_flow_event(self, run_id: int, kind: str, data: dict[str, Any]) -> None:
        """An event from the explore flow (``flows.explore.explore_listener``)."""
        run = self.run
        if run is None or run["id"] != run_id:
            return
        if kind == "started":
            self._clock = time.monotonic()
            run["status"] = "running" if run["status"] == "starting" else run["status"]
            run["output_dir"] = data.get("output_dir", run["output_dir"])
            run["flow_run_id"] = data.get("flow_run_id")
            run["flow_run_url"] = flow_run_url(
                data.get("prefect_api_url"), data.get("flow_run_id"), data.get("prefect_ui_url")
            )
            if run["status"] == "running":
                run["message"] = None  # e.g. "waiting for Prefect's API to start"
            known = [str(a) for a in data.get("known", [])]
            run["known"] = len(known)
            run["attributes"] = known
            run["metrics"] = data.get("metrics")
            self._resync_all()
        elif kind == "batch":
            new = [str(a) for a in data.get("new", [])]
            route = str(data.get("route"))
            stats = run["providers"].setdefault(route, _provider_stats())
            stats["requests"] += 1
            stats["batches"] += 1
            stats["items"] += int(data.get("items", 0))
            stats["new"] += len(new)
            run["attributes"].extend(new)
            run["metrics"] = data.get("metrics")
            point = [round(time.monotonic() - self._clock, 2), len(new), 1]
            _add_point(run["chart"], point)
            self._publish(
                "batch",
                {
                    "run": run_id,
                    "producer": data.get("producer"),
                    "route": route,
                    "new": new,
                    "items": data.get("items"),
                    "metrics": run["metrics"],
                    "point": point,
                    "provider": stats,
                },
            )
        elif kind in ("error", "producer-crashed"):
            route = data.get("route")
            error = {
                "time": _now(),
                "producer": data.get("producer"),
                "route": route,
                "error": str(data.get("error")),
                "status": data.get("status"),
                "crashed": kind == "producer-crashed",
            }
            run["errors"] = [*run["errors"][-(RECENT_ERRORS - 1) :], error]
            stats = None
            if route is not None:
                stats = run["providers"].setdefault(str(route), _provider_stats())
                stats["requests"] += 1
                stats["failures"] += 1
                stats["last_error"] = error["error"]
                stats["last_status"] = error["status"]
                if run["metrics"]:  # counted as the flow counts it (its next batch says so)
                    metrics = run["metrics"]
                    metrics["requests"] = metrics.get("requests", 0) + 1
                    metrics["failures"] = metrics.get("failures", 0) + 1
            self._publish(
                "run-error",
                {"run": run_id, "error": error, "provider": stats, "metrics": run["metrics"]},
            )
        elif kind == "finished":
            run["summary"] = data
            self._publish("summary", {"run": run_id, "summary": data})

    def set_files(self, run_id: int, files: list[str]) -> None:
        """The output files that exist now (the page links only those)."""
        run = self.run
        if run is None or run["id"] != run_id or run["files"] == files:
            return
        run["files"] = files
        self._publish("status", {"run": self._header()})

    def merge_metadata(self, run_id: int, metadata: dict[str, Any]) -> None:
        """What the topic folder's ``metadata.json`` adds to the flow's events: tokens and
        cost per route, and the answer lines rejected as not attributes (reason -> count)."""
        run = self.run
        if run is None or run["id"] != run_id:
            return
        rejected = metadata.get("rejected")
        if isinstance(rejected, dict):
            counts = {str(k): v for k, v in rejected.items() if isinstance(v, int)}
            if counts != run["rejected"]:
                run["rejected"] = counts
                self._publish("status", {"run": self._header()})
        providers = metadata.get("providers")
        if not isinstance(providers, dict):
            return
        changed = False
        for route, stats in providers.items():
            if not isinstance(stats, dict):
                continue
            mine = run["providers"].setdefault(str(route), _provider_stats())
            for key in ("prompt_tokens", "completion_tokens", "cost"):
                value = stats.get(key)
                if isinstance(value, int | float) and mine[key] != value:
                    mine[key] = value
                    changed = True
            if stats.get("cost_known") is False and mine["cost"] is not None:
                mine["cost"] = None
                changed = True
        if changed:
            self._publish("providers", {"run": run_id, "providers": run["providers"]})


def flow_run_url(
    api_url: str | None, flow_run_id: str | None, ui_url: str | None = None
) -> str | None:
    """The flow run's page in the Prefect UI: ``{ui_url}/runs/flow-run/{id}``, where the UI's
    address is PREFECT_UI_URL or else the API's without ``/api``. Only for a configured
    http(s) Prefect server: the ephemeral API has no UI to link to."""
    if not api_url or not flow_run_id or not api_url.startswith(("http://", "https://")):
        return None
    base = ui_url if ui_url and ui_url.startswith(("http://", "https://")) else api_url
    base = base.rstrip("/").removesuffix("/api")
    return f"{base}/runs/flow-run/{flow_run_id}"


def _add_point(chart: list[list[float]], point: list[float]) -> None:
    """Append ``[t, new, batches]``; past ``CHART_POINTS``, merge neighbours pairwise (the
    chart shows new attributes per batch, so merged points average over their batches)."""
    chart.append(list(point))
    if len(chart) > CHART_POINTS:
        merged = []
        for i in range(0, len(chart) - 1, 2):
            a, b = chart[i], chart[i + 1]
            merged.append([b[0], a[1] + b[1], a[2] + b[2]])
        if len(chart) % 2:
            merged.append(chart[-1])
        chart[:] = merged
