"""Helpers shared by the benchmarks in this folder (plain scripts, not tests)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLI = str(Path(PYTHON).parent / "llm-conductor")  # the console script of this venv
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Prefect/litellm defaults the project applies before importing them (blocks/_prefect_env.py),
# so that "import prefect" / "import litellm" measured alone costs what it costs in the CLI.
PROJECT_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "llm_conductor",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a measured child: isolated Prefect state, no Prefect API, no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MODEL_"))}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    env.update(PROJECT_ENV)
    env.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "prefect-storage"),
            # A fresh PREFECT_HOME's first start (database migrations) can pass Prefect's 20 s
            # default on a busy 2-core machine.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "LLM_CONDUCTOR_LOG_FILE": str(tmp / "logs" / "llm-conductor.log"),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update(extra)
    return env


@dataclass
class Timed:
    wall: float
    returncode: int
    stdout: str
    stderr: str
    maxrss_kb: int


def run_timed(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    input_text: str | None = None,
    check: bool = True,
) -> Timed:
    """Run a child to completion; wall time from spawn to reaped."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(input_text)
    wall = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)[:200]} exited {proc.returncode}\n--- stderr ---\n{err[-3000:]}"
        )
    return Timed(wall, proc.returncode, out, err, 0)


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in child output:\n{text[-2000:]}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    return (
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
