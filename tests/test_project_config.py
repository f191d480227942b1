"""Configuration files: ``llm-conductor.toml`` or ``[tool.llm-conductor]`` in pyproject.toml,
below flags and the environment, shown by ``llm-conductor config``. Real ``llm-conductor``
processes in a temporary project folder (``batch --dry-run`` needs no provider or Prefect)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
provider = "random"
model = "file-model"
timeout = 45

[batch]
input_dir = "my-prompts"
parallelism = 3

[tracing]
service_name = "from-file"
"""


def cli(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("MODEL_NAME", "OTEL_SERVICE_NAME")
    }
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=folder,
        env={**environment, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my-prompts").mkdir()
    (tmp_path / "my-prompts" / "a.prompt.md").write_text("a prompt")
    return tmp_path


def dry_run_provider(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    assert "would run  a.prompt.md" in done.stdout, "the file's input_dir was used"
    return done.stdout.rsplit("provider ", 1)[1].strip()


@pytest.mark.parametrize("where", ["llm-conductor.toml", "pyproject.toml"])
def test_flags_beat_env_beat_file_beat_built_in(project: Path, where: str) -> None:
    if where == "pyproject.toml":
        body = CONFIG.replace("[batch]", "[tool.llm-conductor.batch]").replace(
            "[tracing]", "[tool.llm-conductor.tracing]"
        )
        (project / where).write_text("[project]\nname = 'x'\n\n[tool.llm-conductor]\n" + body)
    else:
        (project / where).write_text(CONFIG)
    assert dry_run_provider(cli(project, "batch", "--dry-run")) == "random:file-model"
    env = {"MODEL_NAME": "env-model"}
    assert dry_run_provider(cli(project, "batch", "--dry-run", env=env)) == "random:env-model"
    flagged = cli(project, "batch", "--dry-run", "-m", "flag-model", env=env)
    assert dry_run_provider(flagged) == "random:flag-model"


def test_config_shows_values_and_sources_and_never_a_key(project: Path) -> None:
    (project / "llm-conductor.toml").write_text(CONFIG)
    secret = "sk-config-canary-123456"
    done = cli(project, "config", env={"MODEL_NAME": "env-model", "OPENAI_API_KEY": secret})
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in done.stdout.splitlines()[1:]}
    path = project / "llm-conductor.toml"
    assert rows["provider"] == ["random", f"file {path}"]
    assert rows["model"] == ["env-model", "env MODEL_NAME"]
    assert rows["timeout"] == ["45.0", f"file {path}"]
    assert rows["retries"] == ["3", "built-in"]
    assert rows["batch.input_dir"] == ["my-prompts", f"file {path}"]
    assert rows["batch.output_dir"] == ["outputs", "built-in"]
    assert rows["batch.parallelism"] == ["3", f"file {path}"]
    assert rows["tracing.service_name"] == ["from-file", f"file {path}"]
    assert rows["key.OPENAI_API_KEY"] == ["<redacted>", "env OPENAI_API_KEY"]
    assert rows["key.GEMINI_API_KEY"] == ["-", "not set"]


def test_a_bad_file_is_one_line_naming_file_and_key(project: Path) -> None:
    (project / "llm-conductor.toml").write_text('provider = "random"\napi_key = "sk-in-file"\n')
    done = cli(project, "batch", "--dry-run")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"Error: {project / 'llm-conductor.toml'}: api_key: Extra inputs are not permitted"
    )
    assert "sk-in-file" not in done.stderr
    (project / "llm-conductor.toml").write_text("[batch]\nparallelism = 0\n")
    done = cli(project, "config")
    assert done.returncode == 2
    assert "batch.parallelism: Input should be greater than or equal to 1" in done.stderr


def test_readme_example_file_is_valid(tmp_path: Path) -> None:
    import re

    from blocks.settings import load

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n### Configuration\n") :]
    example = re.search(r"```toml\n(.*?)```", section, re.S)
    assert example, "README's Configuration has a toml example"
    (tmp_path / "llm-conductor.toml").write_text(example.group(1))
    path, config = load(tmp_path)
    assert path == tmp_path / "llm-conductor.toml"
    assert (config.model, config.batch.parallelism, config.tracing.mlflow) == (
        "gpt-4o-mini",
        8,
        True,
    )
