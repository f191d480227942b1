"""What `llm-conductor run` costs over a bare HTTP call to the same server (issue 2).

Plain script, no pytest::

    .venv/bin/python bench/run_overhead.py [--repeat 5] [--latency 0] [--warm 20]

Starts the project's OpenAI-compatible server (tests/support/llm_server.py) in its own
process, then, ``--repeat`` times, interleaved so that machine noise hits every row alike:

* ``python -c pass``: bare interpreter start;
* a bare HTTP call in a fresh process (``python -c`` with httpx, one POST, print the answer);
* ``import prefect`` and ``import litellm`` alone in fresh processes (with the project's env
  defaults, e.g. LITELLM_LOCAL_MODEL_COST_MAP=True);
* the real console script: ``.venv/bin/llm-conductor run -p openai --prompt ...`` with
  OPENAI_BASE_URL pointing at the server and no PREFECT_API_URL (streaming, the default);
* the same command run in stages in one process (CLI modules, our modules on its path,
  litellm with the backend's warm-up, then ``main(["run", ...])``), to say where the extra
  wall time goes; the staged child also reports whether Prefect got imported (it must not:
  without a Prefect API ``run`` never needs it).

Then one process with everything imported times the call itself: a bare httpx.AsyncClient
POST versus ``flows.single.run_single`` (what ``run`` calls: the provider block through
litellm), cold (first call of the process) and warm (median of ``--warm`` calls).

Prints medians. Every child gets its own PREFECT_HOME / PREFECT_LOCAL_STORAGE_PATH in a
temporary folder and no PREFECT_API_URL (so no Prefect server is started, by design).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    CLI,
    PYTHON,
    child_env,
    last_json_line,
    load_average,
    machine,
    median,
    run_timed,
)
from tests.support.llm_server import LLMServerProcess  # noqa: E402

PROMPT = "Explain Python decorators in one sentence"
EXPECTED = f"echo: {PROMPT}"

BARE_HTTP = """
import os, sys, httpx
r = httpx.post(
    os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": sys.argv[1]}]},
    headers={"authorization": "Bearer " + os.environ["OPENAI_API_KEY"]},
    timeout=30,
)
r.raise_for_status()
print(r.json()["choices"][0]["message"]["content"])
"""

# The console script's work, split into timed stages (same modules, same main()).
STAGED = """
import time
t0 = time.time()
import json, sys
marks = [("start", t0)]
import flows.cli
marks.append(("cli", time.time()))
import flows.single_run, blocks.client, tasks.complete
marks.append(("ours", time.time()))
from blocks.providers.litellm_backend import prepare
prepare()
marks.append(("litellm", time.time()))
try:
    flows.cli.main(["run", "-p", "openai", "--prompt", sys.argv[1]])
except SystemExit as exit:
    code = exit.code
else:
    code = 0
marks.append(("run", time.time()))
sys.stdout.flush()
prefect = "prefect" in sys.modules
sys.stderr.write(json.dumps({"marks": marks, "code": code, "prefect": prefect}) + "\\n")
"""

IN_PROCESS = """
import asyncio, json, os, statistics, sys, time
import httpx
from blocks.llm_provider import provider_from_env
from blocks.providers.litellm_backend import _litellm
from flows.single import run_single
_litellm()
prompt, warm = sys.argv[1], int(sys.argv[2])
url = os.environ["OPENAI_BASE_URL"] + "/chat/completions"
headers = {"authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
provider = provider_from_env("openai")
real_stdout = sys.stdout

async def bare(client):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    r = await client.post(url, json=body, headers=headers)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]

async def ours(stream):
    sys.stdout = open(os.devnull, "w")
    try:
        return (await run_single(prompt, provider, stream=stream)).text
    finally:
        sys.stdout.close()
        sys.stdout = real_stdout

async def timed(make):
    t = time.perf_counter()
    await make()
    return time.perf_counter() - t

async def main():
    out = {}
    async with httpx.AsyncClient(timeout=30) as client:
        out["bare_cold"] = await timed(lambda: bare(client))
        out["ours_cold"] = await timed(lambda: ours(True))
        rows = {"bare": [], "ours_stream": [], "ours_nostream": []}
        for _ in range(warm):
            rows["bare"].append(await timed(lambda: bare(client)))
            rows["ours_stream"].append(await timed(lambda: ours(True)))
            rows["ours_nostream"].append(await timed(lambda: ours(False)))
    for name, values in rows.items():
        out[name + "_warm"] = statistics.median(values)
    print(json.dumps(out))

asyncio.run(main())
"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of fresh processes")
    parser.add_argument("--warm", type=int, default=20, help="warm in-process calls per path")
    parser.add_argument("--latency", type=float, default=0.0, help="server latency (s)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    print(f"# run overhead: {machine()}; load average {load_average()}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-run-") as tmp_name,
        LLMServerProcess(latency=args.latency, record=False) as server,
    ):
        tmp = Path(tmp_name)
        env = child_env(tmp, OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-bench")
        rows: dict[str, list[float]] = {
            k: []
            for k in (
                "python",
                "bare",
                "prefect",
                "litellm",
                "cli",
                "staged",
                "s_start",
                "s_cli",
                "s_ours",
                "s_litellm",
                "s_run",
                "s_exit",
            )
        }
        for round_ in range(1, args.repeat + 1):
            rows["python"].append(run_timed([PYTHON, "-c", "pass"], env, cwd=tmp).wall)
            bare = run_timed([PYTHON, "-c", BARE_HTTP, PROMPT], env, cwd=tmp)
            assert bare.stdout.strip() == EXPECTED, bare.stdout
            rows["bare"].append(bare.wall)
            rows["prefect"].append(run_timed([PYTHON, "-c", "import prefect"], env, cwd=tmp).wall)
            rows["litellm"].append(run_timed([PYTHON, "-c", "import litellm"], env, cwd=tmp).wall)
            cli = run_timed([CLI, "run", "-p", "openai", "--prompt", PROMPT], env, cwd=tmp)
            assert cli.stdout.strip() == EXPECTED, (cli.stdout, cli.stderr)
            rows["cli"].append(cli.wall)
            spawned = time.time()
            staged = run_timed([PYTHON, "-c", STAGED, PROMPT], env, cwd=tmp)
            reaped = time.time()
            assert staged.stdout.strip() == EXPECTED, (staged.stdout, staged.stderr)
            report = last_json_line(staged.stderr)
            assert not report["prefect"], "run without a Prefect API imported Prefect"
            marks = dict(report["marks"])
            rows["staged"].append(staged.wall)
            rows["s_start"].append(marks["start"] - spawned)
            rows["s_cli"].append(marks["cli"] - marks["start"])
            rows["s_ours"].append(marks["ours"] - marks["cli"])
            rows["s_litellm"].append(marks["litellm"] - marks["ours"])
            rows["s_run"].append(marks["run"] - marks["litellm"])
            rows["s_exit"].append(reaped - marks["run"])
            print(
                f"  round {round_}: cli {cli.wall:.2f}s, bare {bare.wall:.2f}s, "
                f"staged {staged.wall:.2f}s",
                flush=True,
            )
        inproc = last_json_line(
            run_timed([PYTHON, "-c", IN_PROCESS, PROMPT, str(args.warm)], env, cwd=tmp).stdout
        )

    m = {k: median(v) for k, v in rows.items()}
    extra = m["cli"] - m["bare"]
    print()
    print(f"Fresh processes, medians of {args.repeat} (server latency {args.latency:g}s):")
    print(f"  bare HTTP call (python -c, httpx)      {_ms(m['bare'])}")
    ratio = m["cli"] / m["bare"]
    print(f"  llm-conductor run (console script)     {_ms(m['cli'])}   ratio {ratio:.1f}x")
    print(f"  extra wall time of `run`               {_ms(extra)}")
    # Issue 13: at most half the original llm-conductor's extra (≈8 s on this machine kind).
    print(f"  goal: extra ≤ 4000 ms                  {'met' if extra <= 4.0 else 'NOT met'}")
    print(f"  alone: python -c pass                  {_ms(m['python'])}")
    print(f"  alone: python -c 'import prefect'      {_ms(m['prefect'])}")
    print(f"  alone: python -c 'import litellm'      {_ms(m['litellm'])}")
    print(f"Where `run` spends it (staged copy of the command, total {_ms(m['staged'])}):")
    stages = [
        ("s_start", "python start (until the first statement)"),
        ("s_cli", "CLI modules: typer, blocks.errors/providers"),
        ("s_ours", "our modules on run's path (no Prefect)"),
        ("s_litellm", "import litellm + first-call warm-up"),
        ("s_run", "main(['run', ...]): provider, the call, output"),
        ("s_exit", "interpreter exit"),
    ]
    for key, label in stages:
        print(f"  {label:<48} {_ms(m[key])}")
    print("In one process, everything imported (the call itself):")
    for label, cold, warm in (
        ("bare httpx POST", "bare_cold", "bare_warm"),
        ("run_single (stream)", "ours_cold", "ours_stream_warm"),
    ):
        print(f"  {label + ', cold / warm':<38} {_ms(inproc[cold])} / {_ms(inproc[warm])}")
    print(f"  run_single (no stream), warm           {_ms(inproc['ours_nostream_warm'])}")
    print(
        f"  difference: cold {_ms(inproc['ours_cold'] - inproc['bare_cold'])}, "
        f"warm {_ms(inproc['ours_stream_warm'] - inproc['bare_warm'])} (stream) / "
        f"{_ms(inproc['ours_nostream_warm'] - inproc['bare_warm'])} (no stream)"
    )
    if args.json:
        args.json.write_text(json.dumps({"medians": m, "in_process": inproc}, indent=2))


if __name__ == "__main__":
    main()
