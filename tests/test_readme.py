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
