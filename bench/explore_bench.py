"""Topic exploration throughput: is the orchestration ever what limits it?

Runs the explore flow (in-process, ephemeral Prefect API) with the offline ``random``
provider given a fixed latency L, at 1, 5 and 20 producers, each making R requests. With
nothing but the provider's latency in the way, the ideal wall time is R x L whatever the
number of producers; the ratio wall / ideal shows what orchestration (Prefect task runs,
dedup, journal and snapshot writes) adds. Unique attributes per minute are reported too
(they fall as the random provider's small vocabulary fills up; that is the provider, not us).

    python bench/explore_bench.py [--latency 0.5] [--requests 10] [--producers 1 5 20]

With ``--weak-model``: what explore gets out of a weak model, per completion token, against a
naive loop. The model is scripted (tests/support/weak_model.py, the shapes a small local model
answered with in issue 15: preambles, our prompt repeated, sentences, rambles cut by
max_tokens) behind the local test server, which cuts answers at max_tokens; it knows which
lines are true attributes, so junk is counted against the truth, not against our parser.
Explore runs its flow as usual (``--iterations`` batches, 2 producers); the naive loop sends the
same question again and again (no known list, no continuation) until it has used as many
completion tokens, and keeps every distinct line. Figures: true unique attributes per 1k
completion tokens, the ratio to the naive loop (goal >= 2), junk in output.txt (goal <= 5 %).

    python bench/explore_bench.py --weak-model [--iterations 40] [--seed 1]
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


def weak_model(args: argparse.Namespace) -> None:
    import asyncio
    import re

    import flows.explore as explore
    from blocks.llm_provider import provider_from_env
    from flows.runtime import prefect_runtime
    from tests.support.llm_server import LLMServer
    from tests.support.weak_model import WeakModel

    topic = "Paris attractions"
    marker = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•])\s+")
    with LLMServer() as server, tempfile.TemporaryDirectory() as tmp, prefect_runtime():
        server.honour_max_tokens = True
        os.environ["OPENAI_BASE_URL"] = server.base_url
        os.environ["OPENAI_API_KEY"] = "sk-bench"
        model = WeakModel(args.seed)
        server.reply = model
        summary = asyncio.run(
            explore.explore_topic(
                topic=topic,
                producers=2,
                iterations=args.iterations,
                routing_config="openai:weak",
                output=str(Path(tmp) / "ours"),
                seed=args.seed,
                max_tokens=args.max_tokens,
            )
        )
        out = Path(summary.output_dir)
        meta = json.loads((out / "metadata.json").read_text())
        budget = meta["metrics"]["completion_tokens"]
        lines = (out / "output.txt").read_text(encoding="utf-8").splitlines()
        meant = [model.truth.get(line) for line in lines]
        ours_true = len({m for m in meant if m is not None})
        junk = sum(m is None for m in meant)

        async def naive(max_tokens: int | None) -> tuple[int, int, int, int]:
            server.reply = naive_model = WeakModel(args.seed)
            provider = provider_from_env(
                "openai", model="weak", retries=0, max_continuations=0, max_tokens=max_tokens
            )
            prompt = f"Topic: {topic}\nList 10 attributes of this topic, one per line."
            seen: set[str] = set()
            used = requests = 0
            while used < budget:
                completion = await provider.acomplete(prompt)
                used += completion.completion_tokens
                requests += 1
                for line in completion.text.splitlines():
                    if item := marker.sub("", line).strip():
                        seen.add(item)
            true = {naive_model.truth[s] for s in seen if s in naive_model.truth}
            return requests, used, len(seen), len(true)

        naive_rows = [(cap, *asyncio.run(naive(cap))) for cap in (None, args.max_tokens)]

    per_1k = ours_true / budget * 1000
    print(
        f"weak model (seed {args.seed}), topic {topic!r}: explore {summary.requests} requests, "
        f"2 producers, max_tokens {args.max_tokens}, {budget} completion tokens"
    )
    print(
        f"explore: {len(lines)} lines in output.txt, {ours_true} true unique attributes, "
        f"junk {junk} ({junk / max(len(lines), 1):.1%}); {per_1k:.1f} per 1k tokens; "
        f"rejected {sum(summary.rejected.values())} lines {summary.rejected}"
    )
    print(
        f"{'naive loop':<24}{'requests':>9}{'tokens':>8}{'lines':>7}{'true':>6}{'true/1k':>9}"
        f"{'explore x':>10}"
    )
    for cap, requests, used, distinct, true in naive_rows:
        label = f"max_tokens {cap or 'none'}"
        rate = true / used * 1000
        print(
            f"{label:<24}{requests:>9}{used:>8}{distinct:>7}{true:>6}{rate:>9.1f}"
            f"{per_1k / rate:>10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--requests", type=int, default=10, help="per producer")
    parser.add_argument("--producers", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--weak-model", action="store_true", help="Tokens, not time.")
    parser.add_argument("--iterations", type=int, default=40, help="with --weak-model")
    parser.add_argument("--seed", type=int, default=1, help="with --weak-model")
    parser.add_argument("--max-tokens", type=int, default=None, help="with --weak-model")
    args = parser.parse_args()
    if args.weak_model:
        from tasks.explore import DEFAULT_MAX_TOKENS

        args.max_tokens = args.max_tokens or DEFAULT_MAX_TOKENS
        weak_model(args)
        return

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
