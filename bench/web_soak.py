"""Soak the live web page: does its event stream ever stop while a run goes on?

The second seed's dashboard stopped updating after a while although its orchestrator kept
sending. This starts ``python -m web`` in its own process (ephemeral Prefect API, the offline
``random`` provider given a fixed latency), starts one exploration through the page's API,
and watches it for ``--minutes`` with two server-sent-event clients. Each client records when
every event arrives; the report gives, per client, the longest silence between any two events
(heartbeats included), the longest between two batches, the counts, and whether the sequence
numbers ever skipped. Updates "stopped" if any silence exceeded the page's own watchdog
(3 heartbeats + 2 s, after which a browser reconnects). At the end the run is stopped from
the page and the flushed ``output.txt`` is compared with what the page shows.

    python bench/web_soak.py [--minutes 30] [--producers 5] [--latency 0.5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Client:
    """One watching page: reads the stream on a thread, reconnecting if it ever drops."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.times: list[float] = []  # arrival of every event
        self.batch_times: list[float] = []
        self.counts: dict[str, int] = {}
        self.seq_skips = 0
        self.reconnects = 0
        self.errors: list[str] = []
        self._seq: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        while not self._stop.is_set():
            try:
                with (
                    httpx.Client(timeout=httpx.Timeout(30.0)) as client,
                    client.stream("GET", self.url + "/api/events") as response,
                ):
                    self._read(response.iter_lines())
            except Exception as error:  # counted and reported; the client reconnects
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(error).__name__}: {error}")
                self.reconnects += 1
                time.sleep(0.5)

    def _read(self, lines: Any) -> None:
        event, data = "message", ""
        for line in lines:
            if self._stop.is_set():
                return
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif not line and data:
                self._on(event, json.loads(data))
                event, data = "message", ""

    def _on(self, event: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        self.times.append(now)
        self.counts[event] = self.counts.get(event, 0) + 1
        seq = data.get("seq")
        if event == "state":
            self._seq = seq
        elif event == "heartbeat":
            if self._seq is not None and seq != self._seq:
                self.seq_skips += 1
                self._seq = seq
        else:
            if self._seq is not None and seq != self._seq + 1:
                self.seq_skips += 1
            self._seq = seq
        if event == "batch":
            self.batch_times.append(now)

    def close(self) -> None:
        self._stop.set()

    def report(self, start: float, end: float) -> dict[str, Any]:
        def max_gap(times: list[float]) -> float:
            points = [start, *[t for t in times if start <= t <= end], end]
            return round(max(b - a for a, b in zip(points, points[1:], strict=False)), 2)

        return {
            "client": self.name,
            "events": len(self.times),
            "by_kind": dict(sorted(self.counts.items())),
            "max_gap_any_s": max_gap(self.times),
            "max_gap_batch_s": max_gap(self.batch_times),
            "seq_skips": self.seq_skips,
            "reconnects": self.reconnects,
            "errors": self.errors[-3:],
        }


def _serve(argv: list[str]) -> None:
    """The server process: ``python -m web`` with the random provider slowed to --latency."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-root", required=True)
    parser.add_argument("--latency", type=float, required=True)
    args = parser.parse_args(argv)

    import flows.explore as explore
    from web.server import serve

    real = explore.provider_from_env

    def with_latency(kind: str, **kw: Any) -> Any:
        kw["options"] = {**(kw.get("options") or {}), "latency": args.latency}
        return real(kind, **kw)

    explore.provider_from_env = with_latency
    serve("127.0.0.1", args.port, output_root=args.output_root)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise SystemExit(f"web_soak: {what} did not happen within {timeout:.0f}s")


def main() -> None:
    if sys.argv[1:2] == ["_serve"]:
        _serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--producers", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.5, help="random provider, seconds")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="web-soak-"))
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect")}
    env.pop("PREFECT_API_URL", None)
    (tmp / "prefect").mkdir()
    server = subprocess.Popen(
        [sys.executable, __file__, "_serve", "--port", str(port)]
        + ["--output-root", str(tmp / "output"), "--latency", str(args.latency)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "server.log", "w"),  # noqa: SIM115 (the child owns it)
    )
    http = httpx.Client(base_url=url, timeout=30)
    clients: list[Client] = []
    try:
        _wait(lambda: http.get("/api/state").status_code == 200, 60, "the page serving")
        _wait(lambda: http.get("/api/state").json()["prefect"]["ready"], 180, "Prefect ready")
        clients = [Client("client-1", url), Client("client-2", url)]
        form = {"topic": "soak", "producers": args.producers, "routing_config": "random:random"}
        response = http.post("/api/start", json={**form, "fresh": True})
        response.raise_for_status()
        _wait(
            lambda: (http.get("/api/state").json()["run"] or {}).get("status") == "running",
            120,
            "the run starting",
        )
        start = time.monotonic()
        end = start + args.minutes * 60
        samples = []
        while time.monotonic() < end:
            time.sleep(min(60.0, max(0.0, end - time.monotonic())))
            metrics = http.get("/api/state").json()["run"]["metrics"] or {}
            samples.append((round(time.monotonic() - start), metrics.get("batches", 0)))
            print(
                f"  {samples[-1][0]:>5}s: {samples[-1][1]} batches, "
                + ", ".join(f"{c.name} {len(c.times)} events" for c in clients),
                flush=True,
            )
        end = time.monotonic()
        status = http.get("/api/state").json()["run"]["status"]
        http.post("/api/stop", json={}).raise_for_status()
        stopped = _wait(
            lambda: (run := http.get("/api/state").json()["run"])["status"] == "stopped" and run,
            60,
            "the run stopping",
        )
        lines = http.get("/api/files/output.txt").text.splitlines()
        rates = [
            round((b2 - b1) / max(1e-9, (t2 - t1) / 60))
            for (t1, b1), (t2, b2) in zip([(0, 0), *samples], samples, strict=False)
        ]
        watchdog = 3 * http.get("/api/state").json()["heartbeat"] + 2
        reports = [c.report(start, end) for c in clients]
        stalled = any(r["max_gap_any_s"] > watchdog for r in reports)
        result = {
            "minutes": args.minutes,
            "producers": args.producers,
            "latency": args.latency,
            "status_before_stop": status,
            "batches": stopped["metrics"]["batches"],
            "batches_per_minute": rates,
            "clients": reports,
            "watchdog_s": watchdog,
            "updates_stopped": stalled,
            "files_match_page": lines == stopped["attributes"],
        }
    finally:
        for client in clients:
            client.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(result, indent=2))
    verdict = "STOPPED at some point" if stalled else "never stopped"
    print(
        f"web_soak: {args.minutes:g} min, updates {verdict}; max gap "
        + ", ".join(f"{r['client']} {r['max_gap_any_s']}s" for r in reports)
        + f" (watchdog {watchdog:g}s); files match the page: {result['files_match_page']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(1 if stalled or not result["files_match_page"] else 0)


if __name__ == "__main__":
    main()
