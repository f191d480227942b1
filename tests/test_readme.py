"""README.md opens with two commands that must stay true: the demo and the test suite."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def first_code_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```(?:bash)?\n(.*?)```", text, re.S)
    assert match, "README.md has no code block"
    return [line.split("#")[0].strip() for line in match.group(1).splitlines() if line.strip()]


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, with ``$(BIN)`` and ``$(VENV)`` expanded."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)", str(BIN)).replace("$(VENV)", ".venv"))
    return recipe


def test_readme_opens_with_the_demo_and_the_tests_and_ci_runs_the_latter() -> None:
    assert first_code_block() == ["make demo", "make test"]
    assert make_recipe("test") == [f"{BIN}/python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M), "CI must run the README's test command"


@pytest.mark.timeout(300)
def test_the_demo_recipe_runs_the_example_prompts_offline_then_skips_them(tmp_path) -> None:
    [command] = make_recipe("demo")
    argv = shlex.split(command)
    assert argv[argv.index("--provider") + 1] == "random"
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "outputs")  # not the work tree's
    prompts = sorted((ROOT / "examples" / "prompts").rglob("*.prompt.md"))
    assert prompts

    first = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    assert f"{len(prompts)} ok, 0 failed" in first.stderr
    written = sorted(p for p in (tmp_path / "outputs").rglob("*") if p.is_file())
    assert len([p for p in written if ".llm-conductor" not in p.parts]) == len(prompts)

    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert f"0 ok, 0 failed, {len(prompts)} up to date" in again.stderr


def deployments_block() -> list[tuple[int, str]]:
    """(terminal number, command) of the Deployments section's code block, in order:
    continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Deployments\n") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the Deployments section has no bash block"
    commands, terminal = [], 0
    for line in match.group(1).replace("\\\n", " ").splitlines():
        if found := re.match(r"# terminal (\d+)", line.strip()):
            terminal = int(found.group(1))
        elif shlex.split(line, comments=True):
            commands.append((terminal, line))
    return commands


@pytest.mark.prefect_server
@pytest.mark.timeout(900)
def test_the_deployments_commands_work_as_written_on_another_port(tmp_path) -> None:
    """Each terminal is its own shell (its own exports); the server and the worker keep
    running while the later commands run. Port 4200 becomes a free one: the server's UI then
    only finds its API through the PREFECT_API_URL exported in the server's shell."""
    import json
    import os
    import urllib.request

    from tests.test_deployments import free_port, quiet_env, stop_processes

    port = str(free_port())
    base = quiet_env(tmp_path, "unused", tmp_path / "prefect.db")
    del base["PREFECT_API_URL"]  # only what the README exports
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    shells: dict[int, dict[str, str]] = {}
    background: list[subprocess.Popen[bytes]] = []
    outputs = tmp_path / "outputs"
    ran: list[str] = []
    try:
        for terminal, line in deployments_block():
            env = shells.setdefault(terminal, dict(base))
            argv = [arg.replace("4200", port) for arg in shlex.split(line, comments=True)]
            if argv[0] == "export":
                name, value = argv[1].split("=", 1)
                env[name] = value
                continue
            if argv[0] == "python":
                argv[0] = sys.executable
            if "output_dir=examples/outputs" in argv:
                argv[argv.index("output_dir=examples/outputs")] = f"output_dir={outputs}"
            if "Explore a topic/explore" in argv:
                argv += ["--param", f"output={tmp_path / 'explore'}"]
            ran.append(" ".join(argv[:3]))
            if argv[:3] in (["prefect", "server", "start"], ["prefect", "worker", "start"]):
                log = (tmp_path / f"{argv[1]}.log").open("wb")
                background.append(
                    subprocess.Popen(
                        argv,
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                if argv[1] == "server":
                    _wait_for_api(f"http://127.0.0.1:{port}/api/health", background[-1])
                continue
            done = subprocess.run(
                argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as answer:
            ui = json.load(answer)
        assert ui["api_url"] == f"http://127.0.0.1:{port}/api", "the UI reaches this API"
    finally:
        stop_processes(background[::-1])
    assert ran == [
        "prefect server start",
        f"{sys.executable} -m deployments.setup",
        "prefect deploy --all",
        "prefect worker start",
        "prefect deployment run",
        "prefect deployment run",
        "prefect deployment run",
    ]
    prompts = sorted((ROOT / "examples" / "prompts").rglob("*.prompt.md"))
    written = [p for p in outputs.rglob("*") if p.is_file() and ".llm-conductor" not in p.parts]
    assert len(written) == len(prompts)
    assert (tmp_path / "explore" / "output.txt").read_text().strip()


def _wait_for_api(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import contextlib
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} not healthy within {timeout:.0f}s")
