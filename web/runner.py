"""Starting, watching and stopping the explore flow from the web page.

The flow runs on its own event loop in one long-lived thread, so a busy run never delays the
web server's loop (and its event streams). It is the CLI's code path: the Prefect flow
``flows.explore.explore_topic``, with ``flows.explore.explore_listener`` set in the task
that awaits it. The listener hands every event to the web loop with
``call_soon_threadsafe``; it never blocks and never raises into the flow.

Stop cancels that task: the flow's ``finally`` writes the final snapshot of the output files
and emits ``finished`` before the cancellation completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocks.errors import ConductorError, UsageError
from web.hub import Hub

__all__ = ["FlowThread", "PrefectGate", "Runner", "WebError", "parse_form"]

logger = logging.getLogger("llm_conductor.web")

STRATEGIES = ("backoff", "roundrobin", "priority", "weighted")
MAX_PRODUCERS = 64
MAX_TOPIC = 300
OUTPUT_FILES = ("output.txt", "output.json", "metadata.json")
#: What ``/api/start`` accepts; anything else is refused with a 400 naming it.
FORM_FIELDS = (
    "topic",
    "producers",
    "iterations",
    "max_requests",
    "routing_strategy",
    "routing_config",
    "similarity",
    "seed",
    "max_tokens",
    "fresh",
)
#: How often ``metadata.json`` is read for per-provider tokens and cost while a run goes.
METADATA_INTERVAL = 2.0


class WebError(Exception):
    """A request the page made that cannot be served: an HTTP status and one line for it."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def _integer(form: dict[str, Any], name: str, label: str, default: int | None) -> int | None:
    value = form.get(name, default)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise UsageError(f"{label} must be a whole number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit():
            raise UsageError(f"{label} must be a whole number, got {text[:40]!r}")
        value = int(text)
    if not isinstance(value, int):
        raise UsageError(f"{label} must be a whole number")
    return value


def _number(form: dict[str, Any], name: str, label: str, default: float | None) -> float | None:
    value = form.get(name, default)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise UsageError(f"{label} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{label} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise UsageError(f"{label} must be a finite number")
    return number


def _text(form: dict[str, Any], name: str, label: str, default: str) -> str:
    value = form.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise UsageError(f"{label} must be text")
    return value.strip() or default


def parse_form(form: Any, *, default_config: str = "random:random") -> tuple[Any, bool]:
    """The page's form as ``ExploreSettings`` plus ``fresh``; ``UsageError`` with one line
    for anything the CLI would refuse (and a few limits of the page's own)."""
    from tasks.explore import DEFAULT_MAX_TOKENS, ExploreSettings

    if not isinstance(form, dict):
        raise UsageError("the request body must be a JSON object of form fields")
    # A misspelt field must not silently run with the default instead.
    unknown = sorted(str(name)[:40] for name in form if name not in FORM_FIELDS)
    if unknown:
        raise UsageError(
            f"unknown form field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            f"(known: {', '.join(FORM_FIELDS)})"
        )
    topic = form.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise UsageError("the topic is empty: type what to explore")
    topic = topic.strip()
    if len(topic) > MAX_TOPIC:
        raise UsageError(f"the topic is too long ({len(topic)} characters, at most {MAX_TOPIC})")
    producers = _integer(form, "producers", "producers", 5)
    assert producers is not None
    if producers > MAX_PRODUCERS:
        raise UsageError(f"producers must be at most {MAX_PRODUCERS}, got {producers}")
    strategy = _text(form, "routing_strategy", "routing strategy", "backoff").lower()
    if strategy not in STRATEGIES:
        raise UsageError(
            f"unknown routing strategy {strategy[:40]!r}: use one of {', '.join(STRATEGIES)}"
        )
    fresh = form.get("fresh", False)
    if not isinstance(fresh, bool):
        raise UsageError("fresh must be true or false")
    settings = ExploreSettings(
        topic=topic,
        producers=producers,
        iterations=_integer(form, "iterations", "iterations", None),
        max_requests=_integer(form, "max_requests", "max requests", None),
        routing_strategy=strategy,
        routing_config=_text(form, "routing_config", "routing config", default_config),
        similarity=_number(form, "similarity", "similarity", 92.0),
        seed=_integer(form, "seed", "seed", None),
        max_tokens=_integer(form, "max_tokens", "max tokens", DEFAULT_MAX_TOKENS),
    )
    settings.check()
    return settings, fresh


def _form_of(settings: Any, fresh: bool) -> dict[str, Any]:
    return {
        "topic": settings.topic,
        "producers": settings.producers,
        "iterations": settings.iterations,
        "max_requests": settings.max_requests,
        "routing_strategy": settings.routing_strategy,
        "routing_config": settings.routing_config,
        "similarity": settings.similarity,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        "fresh": fresh,
    }


def _prefect_ui_url() -> str | None:
    """PREFECT_UI_URL, or the UI Prefect derives from PREFECT_API_URL; None if unknown."""
    try:
        from prefect.settings import get_current_settings

        return get_current_settings().ui_url or None
    except Exception:  # a link is a nicety: never let it break the run
        return None


def _existing(output_dir: Path) -> list[str]:
    return [name for name in OUTPUT_FILES if (output_dir / name).is_file()]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class FlowThread:
    """One daemon thread running an event loop for flows."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="web-flows", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


class PrefectGate:
    """Whether flows can run: the API flows/runtime.py chooses (configured, the managed local
    server, or with ``--ephemeral`` a throwaway one), connected or started in a thread (it
    takes seconds); at shutdown a throwaway API is stopped, the managed server kept."""

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self.ready = asyncio.Event()
        self.error: str | None = None
        self._server: Any = None
        self._watch: Any = None
        self._own_url: str | None = None

    def start(self) -> None:
        from flows.runtime import EphemeralServer, configured_api_url, ephemeral_requested

        if self._watch is not None:
            self._watch.__exit__(None, None, None)
            self._watch = None
        url = configured_api_url()
        if url and url != self._own_url:  # not the server this page found or started itself
            self.hub.set_prefect(ready=True, api_url=url, error=None)
            self.ready.set()
            return
        self.error = None
        self.ready.clear()
        self.hub.set_prefect(ready=False, api_url=None, error=None)
        # Spawned here, on the main thread: it dies with the thread that started it.
        ephemeral = EphemeralServer().spawn() if ephemeral_requested() else None
        thread = threading.Thread(
            target=self._connect, args=(ephemeral,), name="prefect-api", daemon=True
        )
        thread.start()

    def _connect(self, ephemeral: Any) -> None:
        from flows.runtime import HealthWatch, ManagedServer, PrefectServerError, use_api_in_process

        error = url = None
        try:
            if ephemeral is not None:
                self._server = ephemeral.wait()
                use_api_in_process(api_url := ephemeral.api_url)
            else:
                url = api_url = ManagedServer().ensure().api_url
                use_api_in_process(url)
        except (PrefectServerError, OSError) as exc:  # shown on the page; Start tries again
            logger.warning("%s", exc)
            error = str(exc)
        else:
            self._own_url = api_url
            # A server that dies is said on the page; the next Start starts it again.
            self._watch = HealthWatch(api_url, on_lost=self._lost_threadsafe).__enter__()
        self.loop.call_soon_threadsafe(self._done, error, url)

    def _lost_threadsafe(self, message: str) -> None:
        logger.error("%s", message)
        text = f"{message}: the next Start starts it again"
        with contextlib.suppress(RuntimeError):  # the page is closing
            self.loop.call_soon_threadsafe(self._done, text, None)

    def _done(self, error: str | None, url: str | None) -> None:
        self.error = error
        self.hub.set_prefect(ready=error is None, error=error, api_url=url)
        self.ready.set()

    def close(self) -> None:
        """Stop a throwaway API if this page started one (events sent first)."""
        if self._watch is not None:
            self._watch.__exit__(None, None, None)
        server, self._server = self._server, None
        if server is None:
            return
        with contextlib.suppress(Exception):
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=5)
        server.stop()
        # Events still queued (a fast run makes thousands) have nowhere to go now: without
        # this, each one logs a connection error after the page has said goodbye.
        for name in ("prefect.events.clients", "prefect._internal.concurrency"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class Runner:
    """At most one exploration at a time, started and stopped from the page."""

    def __init__(
        self,
        hub: Hub,
        gate: PrefectGate,
        flows: FlowThread,
        *,
        output_root: Path,
        default_config: str = "random:random",
    ) -> None:
        self.hub = hub
        self.gate = gate
        self.flows = flows
        self.output_root = output_root
        self.default_config = default_config
        self.loop = gate.loop
        self.run_id = 0
        self.output_dir: Path | None = None
        self._task: asyncio.Task[Any] | None = None  # on the flow loop
        self._stop_requested = False
        self._watcher: asyncio.Task[None] | None = None
        self._run_started: datetime | None = None

    # -- start -----------------------------------------------------------------------------

    def validate(self, form: Any) -> tuple[Any, bool, Path]:
        """Everything the CLI checks before Prefect starts; ``UsageError`` otherwise."""
        from flows.explore import build_routes
        from tasks.explore import default_output_dir

        settings, fresh = parse_form(form, default_config=self.default_config)
        build_routes(settings)  # malformed config, unknown provider, missing key
        output_dir = self.output_root / default_output_dir(settings.topic).name
        topic = _read_json(output_dir / "metadata.json").get("topic")
        if not fresh and topic is not None and topic != settings.topic:
            raise UsageError(
                f"the folder {output_dir.name!r} holds the topic {str(topic)[:80]!r}: "
                "reword the topic, or tick 'start over' (the old files are kept)"
            )
        return settings, fresh, output_dir

    async def start(self, form: Any) -> dict[str, Any]:
        if self.hub.active:
            raise WebError(409, "a run is already going: stop it first (one run at a time)")
        try:
            settings, fresh, output_dir = await asyncio.to_thread(self.validate, form)
        except ConductorError as error:  # UsageError, NeedsKey, ...: one line for the page
            raise WebError(400, str(error)) from None
        if self.hub.active:  # another start won while this one was validating
            raise WebError(409, "a run is already going: stop it first (one run at a time)")
        if self.gate.error:
            self.gate.start()  # it failed before (e.g. a time-out on a busy machine): retry
        self.run_id += 1
        run_id = self.run_id
        self.output_dir = output_dir
        self._stop_requested = False
        self._run_started = datetime.now(UTC)
        self.hub.run_created(run_id, _form_of(settings, fresh), str(output_dir))
        self._watcher = asyncio.create_task(self._watch(run_id, settings, fresh, output_dir))
        return {"ok": True, "run": run_id, "output_dir": str(output_dir)}

    async def _watch(self, run_id: int, settings: Any, fresh: bool, output_dir: Path) -> None:
        """On the web loop: wait for Prefect, run the flow in the flow thread, report."""
        status, message = "failed", None
        try:
            if not self.gate.ready.is_set():
                self.hub.set_status(run_id, "starting", "waiting for Prefect's API to start")
                await self.gate.ready.wait()
            if self.gate.error:
                raise UsageError(self.gate.error)
            if self._stop_requested:
                status = "stopped"
                return
            future = self.flows.submit(self._flow_main(run_id, settings, fresh, output_dir))
            metadata = asyncio.create_task(self._poll_metadata(run_id, output_dir))
            try:
                await asyncio.wrap_future(future)
            finally:
                metadata.cancel()
            self._merge_metadata(run_id, output_dir)
            status = "stopped" if self._stop_requested else "finished"
            summary = (self.hub.run or {}).get("summary") or {}
            if summary.get("failures") and not summary.get("batches"):
                status, message = "failed", self._all_failed(summary["failures"])
            elif summary.get("producers_stopped") and not self._stop_requested:
                message = f"{summary['producers_stopped']} producer(s) stopped after errors"
        except asyncio.CancelledError:
            status, message = "stopped", "the web server is shutting down"
            raise
        except UsageError as error:
            message = str(error)
        except Exception as error:
            logger.exception("the exploration failed")
            message = f"the run failed: {type(error).__name__}: {error}"
        finally:
            self._task = None
            files = _existing(output_dir)
            self.hub.set_status(
                run_id,
                status,
                message,
                ended_at=datetime.now(UTC).isoformat(timespec="seconds"),
                files=files,
            )

    def _all_failed(self, failures: int) -> str:
        """Why a run that got no answer at all failed: each provider's last error."""
        providers = (self.hub.run or {}).get("providers") or {}
        reasons = [
            f"{route}: "
            + (f"HTTP {stats['last_status']}: " if stats.get("last_status") else "")
            + str(stats["last_error"])
            for route, stats in providers.items()
            if stats.get("failures") and stats.get("last_error")
        ]
        return f"every request failed ({failures}); " + ("; ".join(reasons) or "see the log")

    async def _flow_main(self, run_id: int, settings: Any, fresh: bool, output_dir: Path) -> Any:
        """On the flow loop: the CLI's flow call, with the listener set in this task."""
        from flows.explore import explore_listener, explore_with

        self._task = asyncio.current_task()
        explore_listener.set(self._listener(run_id))
        if self._stop_requested:
            return None
        from prefect.exceptions import CancelledRun

        try:
            return await explore_with(settings, output_dir, fresh)
        except (asyncio.CancelledError, CancelledRun):
            if not self._stop_requested:
                raise
            # A clean stop: the flow has flushed its files and its run ended Cancelled.
            logger.info("stopped from the web page; the files in %s are flushed", output_dir)
            return None

    def _listener(self, run_id: int) -> Callable[[str, dict[str, Any]], None]:
        loop, hub = self.loop, self.hub

        def listener(kind: str, data: dict[str, Any]) -> None:
            if kind == "started":
                data = {**data, "prefect_ui_url": _prefect_ui_url()}
            # RuntimeError: the web loop is closed, nobody is watching any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(hub.on_flow_event, run_id, kind, data)

        return listener

    async def _poll_metadata(self, run_id: int, output_dir: Path) -> None:
        while True:
            await asyncio.sleep(METADATA_INTERVAL)
            # Read in a thread, apply here: once this task is cancelled, a read still under
            # way is dropped, so it cannot land after the run's final state.
            metadata, files = await asyncio.to_thread(self._read_outputs, output_dir)
            if metadata is not None:
                self.hub.merge_metadata(run_id, metadata)
            # The page offers a download only once its file exists (else the browser saves
            # a 404).
            self.hub.set_files(run_id, files)

    def _read_outputs(self, output_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
        return self._fresh_metadata(output_dir), _existing(output_dir)

    def _merge_metadata(self, run_id: int, output_dir: Path) -> None:
        metadata = self._fresh_metadata(output_dir)
        if metadata is not None:
            self.hub.merge_metadata(run_id, metadata)

    def _fresh_metadata(self, output_dir: Path) -> dict[str, Any] | None:
        """The topic folder's ``metadata.json``, if it was written by this run."""
        metadata = _read_json(output_dir / "metadata.json")
        try:
            updated = datetime.fromisoformat(metadata["updated"])
        except (KeyError, TypeError, ValueError):
            return None
        started = self._run_started
        if started is None or updated.timestamp() < started.timestamp() - 1:
            return None
        return metadata

    # -- stop ------------------------------------------------------------------------------

    async def stop(self) -> dict[str, Any]:
        run = self.hub.run
        if not self.hub.active or run is None:
            raise WebError(409, "no run is going")
        if run["status"] == "stopping":
            return {"ok": True, "run": run["id"], "status": "stopping"}
        self._stop_requested = True
        self.hub.set_status(run["id"], "stopping", "stopping: flushing the output files")
        task = self._task
        if task is not None:
            self.flows.loop.call_soon_threadsafe(task.cancel)
        return {"ok": True, "run": run["id"], "status": "stopping"}

    async def shutdown(self) -> None:
        """Stop a run that is going and wait (bounded) for its files to be flushed."""
        if self.hub.active:
            await self.stop()
        if self._watcher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._watcher), 30)
            except (TimeoutError, asyncio.CancelledError, Exception):
                logger.warning("the run did not stop in time at shutdown")

    def output_file(self, name: str) -> Path:
        if name not in OUTPUT_FILES:
            raise WebError(404, f"no such output file: {name[:60]!r}")
        if self.output_dir is None:
            raise WebError(404, "no run yet: start one first")
        path = self.output_dir / name
        if not path.is_file():
            raise WebError(404, f"{name} is not written yet")
        return path
