"""Topic exploration throughput: is the orchestration ever what limits it?

Runs the explore flow (in-process, ephemeral Prefect API) with the offline ``random``
provider given a fixed latency L, at 1, 5 and 20 producers, each making R requests. With
nothing but the provider's latency in the way, the ideal wall time is R x L whatever the
number of producers; the ratio wall / ideal shows what orchestration (Prefect task runs,
dedup, journal and snapshot writes) adds. Unique attributes per minute are reported too
(they fall as the random provider's small vocabulary fills up; that is the provider, not us).

    python bench/explore_bench.py [--latency 0.5] [--requests 10] [--producers 1 5 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="explore-bench-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--requests", type=int, default=10, help="per producer")
    parser.add_argument("--producers", type=int, nargs="+", default=[1, 5, 20])
    args = parser.parse_args()

    import asyncio

    import flows.explore as explore
    from flows.runtime import prefect_runtime

    real = explore.provider_from_env

    def with_latency(kind, **kw):  # the random provider's latency knob, for every route
        kw["options"] = {**(kw.get("options") or {}), "latency": args.latency}
        return real(kind, **kw)

    explore.provider_from_env = with_latency
    rows: list[tuple] = []
    with prefect_runtime(), tempfile.TemporaryDirectory() as tmp:
        for n, producers in enumerate([1, *args.producers]):  # run 0 warms the engine up
            started = time.perf_counter()
            summary = asyncio.run(
                explore.explore_topic(
                    topic=f"bench {n}",
                    producers=producers,
                    max_requests=args.requests,
                    routing_config="random:random",
                    output=str(Path(tmp) / str(n)),
                    seed=producers,
                )
            )
            wall = time.perf_counter() - started
            meta = json.loads((Path(summary.output_dir) / "metadata.json").read_text())
            loop = meta["metrics"]["elapsed_seconds"]  # producers running, flow start excluded
            if n:
                rows.append(
                    (
                        producers,
                        summary.requests,
                        wall,
                        loop,
                        summary.unique,
                        summary.duplicate_rate,
                    )
                )
    ideal = args.requests * args.latency
    print(
        f"latency {args.latency:g}s, {args.requests} requests per producer, ideal {ideal:g}s; "
        "flow = whole flow run, loop = producers only"
    )
    print(
        f"{'producers':>9} {'requests':>8} {'flow s':>7} {'loop s':>7} {'loop/ideal':>10} "
        f"{'unique':>7} {'unique/min':>10} {'dup rate':>8}"
    )
    for p, n, wall, loop, unique, dup in rows:
        print(
            f"{p:>9} {n:>8} {wall:>7.2f} {loop:>7.2f} {loop / ideal:>10.2f} {unique:>7} "
            f"{unique / loop * 60:>10.0f} {dup:>8.0%}"
        )


if __name__ == "__main__":
    main()
