"""The live web page's API and event stream, against a real uvicorn server on loopback.

Runs use the offline ``random`` provider (it answers at full speed, so the stream is busy) and
the session's temporary Prefect API, so every run is a real flow run of ``explore_topic``.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from blocks.errors import UsageError
from tasks.explore import DEFAULT_MAX_TOKENS
from web.hub import Hub, flow_run_url
from web.runner import parse_form
from web.server import BackgroundServer

# Runs start real explore flows on a real Prefect API: more than the default 120 s on a
# busy 2-core machine, and the tests' own waits are sized for that.
pytestmark = pytest.mark.timeout(360)

HEARTBEAT = 0.5
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"


class EventStream:
    """A server-sent-events client on its own thread; events arrive in a queue as
    ``(time, event, data)``."""

    def __init__(self, url: str, pause: float = 0.0, receive_buffer: int | None = None) -> None:
        self.url = url
        #: Seconds to wait after each event before reading on: a slow page.
        self.pause = pause
        #: SO_RCVBUF: a small one keeps what the client's kernel holds small, so what lags is
        #: what the server keeps back (left alone, reading 64 KB at once grows it to MBs).
        self.receive_buffer = receive_buffer
        self.events: queue.Queue[tuple[float, str, Any]] = queue.Queue()
        self.headers: httpx.Headers | None = None
        self.retry: int | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        options = []
        if self.receive_buffer:
            options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)]
        transport = httpx.HTTPTransport(socket_options=options)
        with (
            httpx.Client(timeout=httpx.Timeout(10.0), transport=transport) as client,
            client.stream("GET", self.url + "/api/events") as response,
        ):
            self.headers = response.headers
            event, data = "message", []
            for line in response.iter_lines():
                if self._closed.is_set():
                    return
                if line.startswith("retry:"):
                    self.retry = int(line[6:])
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    self.events.put((time.monotonic(), event, json.loads("\n".join(data))))
                    event, data = "message", []
                    if self.pause:
                        time.sleep(self.pause)

    def next(
        self,
        kind: str | None = None,
        until: Callable[[Any], bool] = lambda data: True,
        timeout: float = 30.0,
        seen: list[tuple[str, Any]] | None = None,
    ) -> Any:
        """The data of the next event of ``kind`` for which ``until`` holds; earlier events
        are appended to ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind or 'event'} matching in {timeout}s")
            try:
                _, event, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if seen is not None:
                seen.append((event, data))
            if (kind is None or event == kind) and until(data):
                return data

    def close(self) -> None:
        self._closed.set()  # the next heartbeat ends the thread


@pytest.fixture(scope="module")
def server(prefect_harness, tmp_path_factory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("web-output")
    with BackgroundServer(output_root=root, heartbeat=HEARTBEAT) as background:
        yield background


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        _wait_idle(client)
        yield client


def _wait_idle(client: httpx.Client, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get("/api/state").json()
        run = state["run"]
        if run is None or run["status"] not in ("starting", "running", "stopping"):
            return state
        assert time.monotonic() < deadline, f"the run is still {run['status']}"
        time.sleep(0.1)


def _start(client: httpx.Client, **form: Any) -> dict[str, Any]:
    values = {"producers": 2, "routing_config": "random:random", "fresh": True, **form}
    response = client.post("/api/start", json=values)
    assert response.status_code == 202, response.text
    return response.json()


# -- pure parts ------------------------------------------------------------------------------


def test_flow_run_link_only_for_a_configured_server():
    run = "6f1c"
    assert flow_run_url("http://h:4200/api", run) == "http://h:4200/runs/flow-run/6f1c"
    assert flow_run_url("http://h:4200/api/", run, "https://ui.example/") == (
        "https://ui.example/runs/flow-run/6f1c"
    )
    assert flow_run_url(None, run) is None  # ephemeral API: it serves no UI
    assert flow_run_url("http://h/api", None) is None
    assert flow_run_url("javascript:alert(1)//api", run) is None


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ([], "JSON object"),
        ({}, "topic is empty"),
        ({"topic": "   "}, "topic is empty"),
        ({"topic": "x" * 301}, "too long"),
        ({"topic": "x", "producers": "five"}, "producers must be a whole number"),
        ({"topic": "x", "producers": 0}, "--producers must be at least 1"),
        ({"topic": "x", "producers": 1000}, "at most 64"),
        ({"topic": "x", "iterations": "1.5"}, "iterations must be a whole number"),
        ({"topic": "x", "similarity": "nan"}, "finite"),
        ({"topic": "x", "similarity": 0}, "--similarity must be in"),
        ({"topic": "x", "routing_strategy": "fastest"}, "unknown routing strategy"),
        ({"topic": "x", "fresh": "yes"}, "fresh must be true or false"),
        ({"topic": "x", "max_tokens": "many"}, "max tokens must be a whole number"),
        ({"topic": "x", "max_tokens": 0}, "--max-tokens must be at least 1"),
        ({"topic": "x", "producer_count": 3}, "unknown form field: producer_count (known: "),
        ({"topic": "x", "b": 1, "a": 2}, "unknown form fields: a, b (known: "),
    ],
)
def test_form_checks(form, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_form(form)


def test_form_defaults_and_numbers_as_text():
    settings, fresh = parse_form(
        {"topic": " Paris ", "producers": "3", "iterations": "", "seed": "7", "similarity": "90"}
    )
    assert (settings.topic, settings.producers, settings.iterations) == ("Paris", 3, None)
    assert (settings.seed, settings.similarity, fresh) == (7, 90.0, False)
    assert (settings.routing_strategy, settings.routing_config) == ("backoff", "random:random")
    assert settings.max_tokens == DEFAULT_MAX_TOKENS  # explore's own default, as the CLI's
    assert parse_form({"topic": "x", "max_tokens": "256"})[0].max_tokens == 256


def test_rejected_lines_and_error_statuses_reach_the_state():
    hub = Hub()
    hub.run_created(1, {"topic": "t"}, "out")
    hub.on_flow_event(1, "started", {"known": [], "metrics": {"requests": 0, "failures": 0}})
    assert hub.run["rejected"] is None  # absent: the page shows nothing
    hub.merge_metadata(1, {"providers": {}, "rejected": {"sentence": 4, "prompt echo": 1}})
    assert hub.run["rejected"] == {"sentence": 4, "prompt echo": 1}
    error = {"producer": 0, "route": "openai:m", "error": "openai: denied", "status": 401}
    hub.on_flow_event(1, "error", error)
    assert hub.run["providers"]["openai:m"]["last_status"] == 401
    assert hub.run["errors"][-1]["status"] == 401
    assert (hub.run["metrics"]["requests"], hub.run["metrics"]["failures"]) == (1, 1)


def test_a_slow_client_is_resynchronised_never_waited_for():
    async def go() -> None:
        hub = Hub(heartbeat=0.05, queue_limit=5)
        hub.run_created(1, {"topic": "t"}, "out")
        slow, fast = hub.subscribe(), hub.subscribe()
        stream, slow_stream = hub.stream(fast), hub.stream(slow)
        for client in (stream, slow_stream):
            assert (await anext(client)).startswith("retry:")
            assert (await anext(client)).startswith("event: state")
        hub.on_flow_event(1, "started", {"known": [], "metrics": {}})
        for client in (stream, slow_stream):  # a new run: the full state again
            assert (await anext(client)).startswith("event: state")
        seqs = []
        for n in range(50):  # never blocks, however far behind ``slow`` is
            hub.on_flow_event(1, "batch", {"new": [f"a{n}"], "route": "r", "items": 1})
            chunk = await anext(stream)  # ``fast`` keeps up: every change, in order
            seqs += [json.loads(x[6:])["seq"] for x in chunk.splitlines() if x[:5] == "data:"]
        assert seqs == list(range(seqs[0], seqs[0] + 50))
        assert len(slow.items) <= 5 and slow.resync and slow.resyncs >= 1
        assert (await anext(stream)).startswith("event: heartbeat")  # quiet: a heartbeat
        state = json.loads((await anext(slow_stream)).split("data: ", 1)[1])
        assert state["seq"] == hub.seq and len(state["run"]["attributes"]) == 50
        await stream.aclose()
        await slow_stream.aclose()
        assert not hub.subscribers

    asyncio.run(go())


# -- the live server -------------------------------------------------------------------------


def test_the_page_needs_nothing_from_elsewhere(http):
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for needed in ('id="start"', 'id="stop"', 'id="search"', 'id="chart"', "/static/app.js"):
        assert needed in page.text
    assert "Content-Security-Policy" in page.text
    for name in ("app.js", "style.css"):
        assert http.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():
        urls = set(re.findall(r"https?://[^\s\"')]+", path.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)
    assert "innerHTML" not in (STATIC / "app.js").read_text().split("\n", 3)[3]


def test_bad_requests_get_a_message_not_a_traceback(http, monkeypatch):
    def start(body: Any, **kw: Any) -> httpx.Response:
        return http.post("/api/start", json=body, **kw)

    cases = [
        (start({"topic": ""}), 400, "topic is empty"),
        (start({"topic": "x", "producers": "lots"}), 400, "producers must be a whole number"),
        (start({"topic": "x", "routing_config": "nosuch:m"}), 400, "valid"),
        (start({"topic": "x", "routing_config": "openai"}), 400, "provider:model"),
        (start({"topic": "x", "routing_config": "openai:gpt-4o-mini"}), 400, "OPENAI_API_KEY"),
        (start({"topic": "x", "producer_count": 3}), 400, "unknown form field: producer_count"),
        (start({"topic": "../.."}), 400, "no letters or digits"),
        (http.post("/api/start", content=b"topic=x"), 415, "JSON"),
        (
            http.post("/api/start", content=b"{", headers={"content-type": "application/json"}),
            400,
            "not valid JSON",
        ),
        (http.post("/api/stop", json={}), 409, "no run is going"),
        (http.get("/api/files/secret.txt"), 404, "no such output file"),
        (http.get("/api/files/..%2Fpyproject.toml"), 404, "error"),
        (http.get("/nowhere"), 404, "Not Found"),
        (http.get("/api/state", headers={"host": "evil.example"}), 400, "Invalid host header"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (message, response.text)
        text = response.text
        assert message in text and "Traceback" not in text, text
        if response.headers.get("content-type") == "application/json":
            assert list(response.json()) == ["error"]


def test_an_idle_stream_still_beats(server):
    stream = EventStream(server.url)
    try:
        state = stream.next("state", timeout=10)
        first = stream.next("heartbeat", timeout=10)
        second = stream.next("heartbeat", timeout=10)
        assert first["seq"] == second["seq"] == state["seq"]
        assert stream.retry == int(HEARTBEAT * 1000)
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
    finally:
        stream.close()


def test_start_watch_from_two_pages_stop_and_reconnect(server, http):
    one, two = EventStream(server.url), EventStream(server.url)
    try:
        for stream in (one, two):
            stream.next("state", timeout=10)
        started = _start(http, topic="Paris web")
        assert started["output_dir"].endswith("paris-web")
        assert http.post("/api/start", json={"topic": "Rome"}).status_code == 409

        # Both pages get the new run, then the same batches in order, with rising counts.
        streams: dict[str, list[tuple[str, Any]]] = {"one": [], "two": []}
        for name, stream in (("one", one), ("two", two)):
            stream.next("state", lambda d: d["run"] and d["run"]["status"] == "running")
            stream.next("batch", lambda d: d["metrics"]["unique"] >= 100, seen=streams[name])
        batches = {name: [d for e, d in seen if e == "batch"] for name, seen in streams.items()}
        for seen in batches.values():
            seqs = [d["seq"] for d in seen]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gaps, no reordering"
            uniques = [d["metrics"]["unique"] for d in seen]
            assert uniques == sorted(uniques) and uniques[-1] > uniques[0]
        common = min(len(b) for b in batches.values())
        assert [d["new"] for d in batches["one"][:common]] == [
            d["new"] for d in batches["two"][:common]
        ]

        state = http.get("/api/state").json()
        run = state["run"]
        assert run["status"] == "running" and run["form"]["topic"] == "Paris web"
        assert run["flow_run_url"].endswith("/runs/flow-run/" + run["flow_run_id"])
        assert run["providers"]["random:random"]["batches"] > 0
        assert run["chart"] and all(len(point) == 3 for point in run["chart"])

        # The page offers a download once its file exists: the run lists them as they appear.
        deadline = time.monotonic() + 60
        while not (listed := http.get("/api/state").json()["run"]["files"]):
            assert time.monotonic() < deadline, "the output files were never listed"
            time.sleep(0.2)
        for name in listed:
            assert http.get(f"/api/files/{name}").status_code == 200, name

        assert http.post("/api/stop", json={}).json()["status"] == "stopping"
        final = one.next("status", lambda d: d["run"]["status"] == "stopped", timeout=60)
        two.next("status", lambda d: d["run"]["status"] == "stopped", timeout=60)
        assert final["run"]["files"] == ["output.txt", "output.json", "metadata.json"]
        assert final["run"]["message"] is None

        # A page that (re)connects now gets the whole state, equal to /api/state.
        state = _wait_idle(http)
        three = EventStream(server.url)
        try:
            assert three.next("state", timeout=10) == state
        finally:
            three.close()
        run = state["run"]
        assert run["summary"]["interrupted"] is True
        text = http.get("/api/files/output.txt")
        assert text.headers["content-type"].startswith("text/plain")
        assert "attachment" in text.headers["content-disposition"]
        assert text.text.splitlines() == run["attributes"], "flushed: the files match the page"
        journal = Path(run["output_dir"], "attributes.jsonl").read_text().splitlines()
        assert len(journal) == len(run["attributes"]) == run["metrics"]["unique"]
        document = http.get("/api/files/output.json").json()
        assert [r["attribute"] for r in document["attributes"]] == run["attributes"]

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(run["flow_run_id"])
        assert flow_run.state.type.value == "CANCELLED", flow_run.state
    finally:
        one.close()
        two.close()


#: How far (in events) a slow page may fall behind the hub before a resync must have come...
LAG_LIMIT = 2000
#: ... and how many events, at most, it then reads to be current again once it reads fast.
CATCH_UP = 1000


def test_a_slow_page_is_resynchronised_and_ends_current(server, http):
    hub = server.app.state.hub
    # ≈ 50 events/s at most (slower than the run), through a 16 KB receive buffer.
    stream = EventStream(server.url, pause=0.02, receive_buffer=16 * 1024)
    try:
        stream.next("state", timeout=10)
        _start(http, topic="Slow page", producers=2)
        running = stream.next("state", lambda d: d["run"]["status"] == "running", timeout=120)
        most_behind = 0
        for _ in range(50_000):  # the page falls behind: kernel buffers must not hide it
            _, event, data = stream.events.get(timeout=60)
            most_behind = max(most_behind, hub.seq - data["seq"])
            assert most_behind < LAG_LIMIT, f"{most_behind} events behind, not resynchronised"
            if event == "state":
                break
        else:
            raise AssertionError(f"never resynchronised (at most {most_behind} events behind)")
        assert data["run"]["status"] == "running" and data["seq"] > running["seq"]

        assert http.post("/api/stop", json={}).status_code == 202
        final = _wait_idle(http)["seq"]
        stream.pause = 0  # reads fast from now on: the backlog left is bounded
        for _ in range(CATCH_UP):
            _, event, data = stream.events.get(timeout=60)
            if data["seq"] >= final:
                break
        else:
            raise AssertionError(f"still behind after {CATCH_UP} events")
    finally:
        stream.close()
    from tests.support.prefect_runs import wait_until_recorded

    run = http.get("/api/state").json()["run"]
    asyncio.run(wait_until_recorded(run["flow_run_id"], run["summary"]["requests"]))


def test_a_run_with_iterations_finishes_on_its_own(server, http):
    stream = EventStream(server.url)
    try:
        stream.next("state", timeout=10)
        _start(http, topic="Lyon", iterations=4, producers=3, seed=3)
        ended = ("finished", "stopped", "failed")
        done = stream.next("status", lambda d: d["run"]["status"] in ended, timeout=120)
        assert done["run"]["status"] == "finished", done
        state = http.get("/api/state").json()
        assert state["run"]["summary"]["batches"] == 4
        assert len(state["run"]["chart"]) == 4
        metadata = http.get("/api/files/metadata.json").json()
        assert metadata["metrics"]["batches"] == 4 and metadata["topic"] == "Lyon"
    finally:
        stream.close()


def _harness_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness sets an API URL"
    return url


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "llm-conductor"), "web"],
        [sys.executable, "-m", "web"],
    ],
    ids=["llm-conductor-web", "python-m-web"],
)
def test_the_commands_serve_and_stop_on_ctrl_c(command, prefect_harness, unused_port, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": _harness_api_url()}
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [*command, "--port", str(unused_port), "--output-root", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"llm-conductor web: http://127.0.0.1:{unused_port}/"), line
        url = f"http://127.0.0.1:{unused_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                state = httpx.get(url + "/api/state", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert state["prefect"]["api_url"] == env["PREFECT_API_URL"]
        watcher = EventStream(url)  # an open page must not hold the shutdown up
        watcher.next("state", timeout=10)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        watcher.close()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_web_help_documents_the_options():
    cli = str(Path(sys.executable).parent / "llm-conductor")
    result = subprocess.run([cli, "web", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--output-root", "127.0.0.1", "8080"):
        assert option in result.stdout
    bad = subprocess.run([cli, "web", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--port" in bad.stderr


def test_a_busy_port_is_one_line_not_a_traceback():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-m", "web", "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (try another --port)\n"
    )


def test_ctrl_c_during_a_run_ends_its_flow_run_cancelled(prefect_harness, unused_port, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": _harness_api_url()}
    command = [sys.executable, "-m", "web", "--port", str(unused_port)]
    process = subprocess.Popen(
        [*command, "--output-root", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        process.stdout.readline()
        url = f"http://127.0.0.1:{unused_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/api/state", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the web server did not answer"
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=30) as client:
            _start(client, topic="Ctrl-C")
            deadline = time.monotonic() + 120
            while not (run := client.get("/api/state").json()["run"])["flow_run_id"]:
                assert time.monotonic() < deadline, run
                time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "Crash" not in stderr and "Traceback" not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run["flow_run_id"])
    assert flow_run.state.type.value == "CANCELLED", (flow_run.state, stderr)
