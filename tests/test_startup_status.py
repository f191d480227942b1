"""On a terminal, ``batch`` says "starting Prefect..." while Prefect starts, before its
progress bar: the command runs on a pseudo-terminal, its output read as a user would see it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent


def test_batch_on_a_terminal_says_starting_prefect_before_the_bar(tmp_path: Path) -> None:
    from prefect.settings import get_current_settings

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.md.prompt.md").write_text(f"prompt {i}")
    master, slave = pty.openpty()
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "batch",
            "-p",
            "random",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: the process is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert process.wait(timeout=240) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=30)
        os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "starting Prefect..." in screen, screen
    assert "3/3" in screen, "the progress bar came after it"
    assert screen.index("starting Prefect...") < screen.index("3/3")
