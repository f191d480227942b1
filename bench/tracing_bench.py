"""Tracing overhead per LLM call, per backend, as a ratio to the untraced run.

Plain script, no pytest: ``.venv/bin/python bench/tracing_bench.py [--calls 200] [--repeat 3]``
(needs the ``observability`` extra).

For each target (``random``: the offline provider, nearly free, so the ratio shows tracing's
own cost; ``server``: the openai provider through litellm to the local OpenAI-compatible
server in its own process, a realistic per-call cost) and each mode (``off``, ``mlflow``:
sqlite store in a temporary folder, ``otel``: OTLP/HTTP to a receiver in this process,
``both``), a fresh child process makes ``--calls`` completions, ``--concurrency`` at a time,
inside one flow span (one trace, as a batch), after 20 untimed warm-up calls that also pay
the backends' start-up (imports, MLflow's database). The timed window ends when every span has
been exported (``tracing.flush()``), so background export threads are counted. Wall and CPU
(all threads of the child) per call are medians over ``--repeat`` runs; the ratio is to
``off``. On this 2-core VM other processes move these figures by tens of percent: compare
modes from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PYTHON, ROOT, child_env, last_json_line, load_average, machine, median

MODES = ("off", "mlflow", "otel", "both")
TARGETS = ("random", "server")
WARMUP = 20


def child(args: argparse.Namespace) -> None:
    from blocks import LLMProvider, tracing

    if args.target == "random":
        provider = LLMProvider(kind="random", options={"seed": 7})
    else:
        provider = LLMProvider(
            kind="openai", model="bench-model", api_base=args.server_url, api_key="sk-bench"
        )

    async def calls(count: int) -> None:
        gate = asyncio.Semaphore(args.concurrency)

        async def one(i: int) -> None:
            async with gate:
                await provider.acomplete(f"Give me a list of rivers, number {i}")

        with tracing.flow_span("tracing bench", flow_run_id=f"bench-{args.mode}"):
            await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(calls(WARMUP))
    tracing.flush()
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(calls(args.calls))
    tracing.flush()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall_ms": wall * 1000 / args.calls, "cpu_ms": cpu * 1000 / args.calls}))


def run_mode(mode: str, target: str, args: argparse.Namespace, urls: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as tmp:
        extra = {"LITELLM_MLFLOW_ENABLED": "false", "LITELLM_OTEL_ENABLED": "false"}
        if mode in ("mlflow", "both"):
            extra["LITELLM_MLFLOW_ENABLED"] = "true"
            extra["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            extra["MLFLOW_EXPERIMENT_NAME"] = "tracing-bench"
        if mode in ("otel", "both"):
            extra["LITELLM_OTEL_ENABLED"] = "true"
            extra["TRACELOOP_BASE_URL"] = urls["otlp"]
        argv = [PYTHON, str(Path(__file__).resolve()), "_child", "--mode", mode]
        argv += ["--target", target, "--calls", str(args.calls)]
        argv += ["--concurrency", str(args.concurrency), "--server-url", urls["server"]]
        env = child_env(Path(tmp), **extra)
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{mode}/{target} failed:\n{done.stderr[-3000:]}")
        return last_json_line(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "_child"])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--mode", default="off")
    parser.add_argument("--target", default="random")
    parser.add_argument("--server-url", default="")
    args = parser.parse_args(argv)
    if args.command == "_child":
        child(args)
        return 0

    from tests.support.llm_server import LLMServerProcess
    from tests.test_tracing import OTLPReceiver

    targets = [t for t in args.targets.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    print(f"# tracing overhead: {machine()}, load {load_average()}")
    print(f"# {args.calls} calls, {args.concurrency} at a time, median of {args.repeat} runs")
    with OTLPReceiver() as receiver, LLMServerProcess(reply="Rhine, Danube, Loire") as server:
        urls = {"otlp": receiver.url, "server": server.base_url}
        for target in targets:
            results: dict[str, dict[str, float]] = {}
            for mode in modes:
                runs = [run_mode(mode, target, args, urls) for _ in range(args.repeat)]
                results[mode] = {
                    key: median([r[key] for r in runs]) for key in ("wall_ms", "cpu_ms")
                }
            base = results.get("off")
            print(f"\ntarget {target}")
            print(f"{'mode':8} {'wall ms/call':>13} {'cpu ms/call':>12} {'wall x':>7} {'cpu x':>7}")
            for mode, r in results.items():
                wall_x = r["wall_ms"] / base["wall_ms"] if base else float("nan")
                cpu_x = r["cpu_ms"] / base["cpu_ms"] if base else float("nan")
                print(
                    f"{mode:8} {r['wall_ms']:13.3f} {r['cpu_ms']:12.3f} {wall_x:7.2f} {cpu_x:7.2f}"
                )
        spans = len(receiver.spans)
    print(f"\n# OTLP receiver got {spans} spans")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
