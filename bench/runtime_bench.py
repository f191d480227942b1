"""What the Prefect runtime costs a command: `llm-conductor batch` over the 5 example prompts
on the random provider, as whole processes, interleaved.

    python bench/runtime_bench.py --rounds 5

- warm: the managed local server already running (started once before the rounds);
- ephemeral: `--ephemeral`, a throwaway API per command;
- no-prefect: a process making the same 5 calls through the provider block, no flow, no server;
- cold: a fresh Prefect home, the first command (the managed server starts), then stopped.

Prints min and median wall per kind, the ratios (goals: warm <= 1.3 x no-prefect and
<= 0.3 x ephemeral) and the load average before and after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CLI, PYTHON, ROOT, child_env, load_average, machine, median, run_timed  # noqa: E402

EXAMPLES = ROOT / "examples" / "prompts"

NO_PREFECT = """
import asyncio, sys
from pathlib import Path
from blocks.llm_provider import LLMProvider
from tasks.prompt_files import discover_prompts, read_prompt

async def main():
    provider = LLMProvider(kind="random")
    prompts, _problems = discover_prompts(Path(sys.argv[1]), recursive=True)
    texts = [read_prompt(p)[1] for p in prompts]
    done = await asyncio.gather(*(provider.acomplete(t) for t in texts))
    assert len(done) == 5, len(done)

asyncio.run(main())
"""


def batch(extra: list[str], out: Path) -> list[str]:
    return [
        CLI,
        *extra,
        "batch",
        "-p",
        "random",
        "-r",
        "-i",
        str(EXAMPLES),
        "-o",
        str(out),
        "--force",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine(), "load before:", load_average())
    walls: dict[str, list[float]] = {"warm": [], "ephemeral": [], "no-prefect": [], "cold": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "warm" / "prefect-home").mkdir(parents=True)
        (tmp / "eph" / "prefect-home").mkdir(parents=True)
        warm_env = child_env(tmp / "warm")
        eph_env = child_env(tmp / "eph", LLM_CONDUCTOR_EPHEMERAL="1")
        run_timed([CLI, "server", "start"], warm_env)
        try:
            for n in range(args.rounds):
                walls["warm"].append(run_timed(batch([], tmp / "out-w"), warm_env).wall)
                walls["ephemeral"].append(run_timed(batch([], tmp / "out-e"), eph_env).wall)
                code = [PYTHON, "-c", NO_PREFECT, str(EXAMPLES)]
                walls["no-prefect"].append(run_timed(code, warm_env, cwd=ROOT).wall)
                cold = tmp / f"cold{n}"
                (cold / "prefect-home").mkdir(parents=True)
                cold_env = child_env(cold)
                try:
                    walls["cold"].append(run_timed(batch([], cold / "out"), cold_env).wall)
                finally:
                    run_timed([CLI, "server", "stop"], cold_env, check=False)
        finally:
            run_timed([CLI, "server", "stop"], warm_env, check=False)
    for kind, values in walls.items():
        print(
            f"{kind:11} min {min(values):6.2f} s  median {median(values):6.2f} s  n={len(values)}"
        )
    warm, bare, eph = (median(walls[k]) for k in ("warm", "no-prefect", "ephemeral"))
    print(f"warm / no-prefect = {warm / bare:.2f} (goal <= 1.3)")
    print(f"warm / ephemeral  = {warm / eph:.2f} (goal <= 0.3)")
    print("load after:", load_average())


if __name__ == "__main__":
    main()
