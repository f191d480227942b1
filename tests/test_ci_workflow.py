"""The CI workflow (``.github/workflows/regenerate-outputs.yml``), run here step by step.

No GitHub: a small runner reads the YAML, evaluates the ``${{ }}`` expressions and ``if:``
conditions the workflow uses, runs every ``run:`` step with bash (GitHub's ``bash -eo
pipefail``) in a temporary git repository cloned from a local "origin", and plays the four
actions it uses: ``checkout`` (a clone), ``setup-python`` (nothing: this venv is on PATH),
``upload-artifact`` / ``download-artifact`` (a folder). The only step not run is ``pip install
-e .`` (this venv has the project installed). The batch calls the local OpenAI-compatible test
server; the saved provider block lives in the session's real Prefect server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from blocks import LLMProvider

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "regenerate-outputs.yml"
BIN = Path(sys.executable).parent
KEY = "sk-ci-block-key"


class Context(dict):
    """A context object of GitHub's expression language: missing properties are ''."""

    def __getattr__(self, name: str) -> Any:
        value = self.get(name, "")
        return Context(value) if isinstance(value, dict) else value


def render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def evaluate(expression: str, contexts: dict[str, Any]) -> Any:
    """The subset of GitHub's expressions this workflow uses: context properties, string
    literals, true/false, ==, !=, !, &&, || and always()."""
    parts = re.split(r"('[^']*')", expression)  # string literals stay as they are
    for i in range(0, len(parts), 2):
        code = parts[i].replace("&&", " and ").replace("||", " or ")
        code = re.sub(r"!(?!=)", " not ", code)
        parts[i] = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", code))
    python = "".join(parts)
    names = {k: Context(v) for k, v in contexts.items()}
    return eval(python, {"__builtins__": {}, "always": lambda: True}, names)  # noqa: S307


def substitute(text: str, contexts: dict[str, Any]) -> str:
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda m: render(evaluate(m.group(1), contexts)), text, flags=re.S
    )


@dataclass
class Run:
    """One workflow run: its event, settings, and what each job and step did."""

    home: Path
    origin: Path
    event: str
    ref: str
    vars: dict[str, str]
    secrets: dict[str, str]
    inputs: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    def contexts(self, env: dict[str, str], steps: dict[str, Any]) -> dict[str, Any]:
        github = {"event_name": self.event, "ref": self.ref, "run_id": "4242", "sha": "0" * 40}
        return {
            "github": github,
            "vars": self.vars,
            "secrets": self.secrets,
            "inputs": self.inputs,
            "env": env,
            "steps": steps,
            "needs": self.jobs,
        }

    def run_job(self, name: str, job: dict[str, Any], workflow_env: dict[str, Any]) -> None:
        base = self.contexts({}, {})
        if "if" in job and not evaluate(job["if"], base):
            self.jobs[name] = {"result": "skipped", "outputs": {}}
            return
        env = {k: render(v) for k, v in workflow_env.items()}
        for key, value in (job.get("env") or {}).items():
            env[key] = substitute(render(value), self.contexts(env, {}))
        work = self.home / f"job-{name}"
        steps: dict[str, Any] = {}
        failed = False
        for index, step in enumerate(job["steps"]):
            contexts = self.contexts(env, steps)
            condition = step.get("if")
            if condition is None:
                run_it = not failed
            else:
                run_it = evaluate(condition, contexts) and ("always()" in condition or not failed)
            step_id = step.get("id", f"step{index}")
            if not run_it:
                steps[step_id] = {"outcome": "skipped", "outputs": {}}
                continue
            ok, outputs = self.run_step(name, step, env, contexts, work)
            steps[step_id] = {"outcome": "success" if ok else "failure", "outputs": outputs}
            failed = failed or not ok
        outputs = {
            k: substitute(render(v), self.contexts(env, steps))
            for k, v in (job.get("outputs") or {}).items()
        }
        self.jobs[name] = {"result": "failure" if failed else "success", "outputs": outputs}

    def run_step(
        self,
        job: str,
        step: dict[str, Any],
        env: dict[str, str],
        contexts: dict[str, Any],
        work: Path,
    ) -> tuple[bool, dict[str, str]]:
        with_ = {k: substitute(render(v), contexts) for k, v in (step.get("with") or {}).items()}
        uses = step.get("uses", "")
        if uses.startswith("actions/checkout@"):
            subprocess.run(["git", "clone", "-q", str(self.origin), str(work)], check=True)
            return True, {}
        if uses.startswith("actions/setup-python@"):
            return True, {}
        if uses.startswith("actions/upload-artifact@"):
            store = self.home / "artifacts" / with_["name"]
            [source, exclude] = [p.strip() for p in with_["path"].strip().splitlines()]
            shutil.copytree(
                work / source,
                store,
                ignore=lambda d, names: [n for n in names if Path(d, n) == work / exclude[1:]],
            )
            return True, {}
        if uses.startswith("actions/download-artifact@"):
            shutil.copytree(
                self.home / "artifacts" / with_["name"], work / with_["path"], dirs_exist_ok=True
            )
            return True, {}
        assert not uses, f"the runner does not know {uses}"
        script = substitute(step["run"], contexts)
        if script.strip() == "pip install -e .":
            return True, {}  # this venv has the project installed (editable)
        output_file, summary_file = self.home / "output", self.home / "summary"
        output_file.write_text("")
        summary_file.touch()
        environment = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            **env,
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_STEP_SUMMARY": str(summary_file),
            "GITHUB_SHA": "0" * 40,
            "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        }
        minutes = float(step.get("timeout-minutes", 5))
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=work,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=min(minutes * 60, 300),
        )
        self.logs.append(f"--- {job}: {step.get('name')} -> {done.returncode}\n{done.stdout}")
        self.logs.append(done.stderr)
        self.summaries[job] = self.summaries.get(job, "") + summary_file.read_text()
        outputs = dict(
            line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line
        )
        return done.returncode == 0, outputs

    def run(self) -> None:
        workflow = yaml.safe_load(WORKFLOW.read_text())
        for name, job in workflow["jobs"].items():
            self.run_job(name, job, workflow.get("env") or {})


def make_origin(home: Path, prompts: dict[str, str]) -> Path:
    """A bare repository with one commit holding ``prompts/``, on ``main``."""
    seed = home / "seed"
    for name, text in prompts.items():
        (seed / "prompts" / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / "prompts" / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    subprocess.run([*git, "-C", str(seed), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(seed), "commit", "-qm", "prompts"], check=True)
    origin = home / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    return origin


def origin_files(origin: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(origin), "ls-tree", "-r", "--name-only", "main"],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(listed.stdout.split())


def api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


@pytest.fixture
def ci_env(monkeypatch: pytest.MonkeyPatch, llm_server: Any, tmp_path: Path) -> None:
    """What the runner machine has: the test server as the OpenAI endpoint, a git identity."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLM_CONDUCTOR_LOG_FILE", str(tmp_path / "llm-conductor.log"))
    (tmp_path / "home").mkdir()


def test_push_to_main_with_a_saved_block_commits_what_was_paid_for(
    llm_server: Any, tmp_path: Path, ci_env: None
) -> None:
    LLMProvider(
        kind="openai", model="ci-model", api_base=llm_server.base_url, api_key=KEY, retries=0
    ).save("ci-block", overwrite=True)
    origin = make_origin(tmp_path, {"a.md.prompt.md": "first", "b.md.prompt.md": "second"})
    llm_server.enqueue(400)  # one at a time, in name order: a fails, b is answered
    run = Run(
        home=tmp_path,
        origin=origin,
        event="push",
        ref="refs/heads/main",
        vars={"LLM_PROVIDER_BLOCK": "ci-block", "LLM_PARALLELISM": "1", "LLM_MAX_COST": "5"},
        secrets={"PREFECT_API_URL": api_url()},
    )
    run.run()
    logs = "\n".join(run.logs)
    regenerate, commit = run.jobs["regenerate"], run.jobs["commit"]
    assert regenerate["outputs"] == {"code": "1", "has_outputs": "true"}, logs
    assert regenerate["result"] == "failure", "a prompt failed: the job says so"
    summary = run.summaries["regenerate"]
    assert "### llm-conductor batch: exit code 1" in summary
    assert re.search(r"^    WARNING failed a\.md\.prompt\.md: ", summary, re.M), summary
    assert re.search(r"^    batch: 2 prompts: 1 ok, 1 failed", summary, re.M), summary
    assert {r.json["model"] for r in llm_server.requests} == {"ci-model"}
    assert {r.headers["authorization"] for r in llm_server.requests} == {f"Bearer {KEY}"}

    assert commit["result"] == "success", logs
    files = origin_files(origin)
    assert "outputs/b.md" in files and "outputs/a.md" not in files
    assert "outputs/.llm-conductor/manifest.jsonl" in files
    assert "outputs/.llm-conductor/lock" not in files


def test_a_usage_error_reaches_the_summary_and_nothing_is_committed(
    llm_server: Any, tmp_path: Path, ci_env: None
) -> None:
    origin = make_origin(tmp_path, {"a.md.prompt.md": "first"})
    run = Run(
        home=tmp_path,
        origin=origin,
        event="push",
        ref="refs/heads/main",
        vars={"LLM_PROVIDER_BLOCK": "no-such-block"},
        secrets={"PREFECT_API_URL": api_url()},
    )
    run.run()
    logs = "\n".join(run.logs)
    assert run.jobs["regenerate"]["outputs"] == {"code": "2", "has_outputs": "false"}, logs
    summary = run.summaries["regenerate"]
    assert "    Error: no LLM Provider block named 'no-such-block'" in summary, summary
    assert run.jobs["commit"]["result"] == "skipped"
    assert origin_files(origin) == ["prompts/a.md.prompt.md"]
    assert llm_server.request_count == 0


def test_a_pull_request_uploads_but_never_commits(
    llm_server: Any, tmp_path: Path, ci_env: None
) -> None:
    origin = make_origin(tmp_path, {"a.md.prompt.md": "first"})
    run = Run(
        home=tmp_path,
        origin=origin,
        event="pull_request",
        ref="refs/pull/7/merge",
        vars={"MODEL_PROVIDER": "openai", "MODEL_NAME": "pr-model"},
        secrets={"OPENAI_API_KEY": "sk-pr", "PREFECT_API_URL": api_url()},
    )
    run.run()
    logs = "\n".join(run.logs)
    assert run.jobs["regenerate"] == {
        "result": "success",
        "outputs": {"code": "0", "has_outputs": "true"},
    }, logs
    assert (tmp_path / "artifacts" / "outputs-4242" / "a.md").is_file()
    assert not (tmp_path / "artifacts" / "outputs-4242" / ".llm-conductor" / "lock").exists()
    assert run.jobs["commit"]["result"] == "skipped"
    assert origin_files(origin) == ["prompts/a.md.prompt.md"]


def test_write_permission_belongs_to_the_commit_job_alone() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["regenerate"].get("permissions") is None
    assert workflow["jobs"]["commit"]["permissions"] == {"contents": "write"}
    assert "github.ref == 'refs/heads/main'" in workflow["jobs"]["commit"]["if"]
    assert "pull_request" in workflow["jobs"]["commit"]["if"]
    # A time budget inside the step's time-out, which is inside the job's.
    regenerate = workflow["jobs"]["regenerate"]
    [batch] = [s for s in regenerate["steps"] if s.get("id") == "batch"]
    assert "--time-budget" in batch["run"]
    assert 5400 / 60 < batch["timeout-minutes"] < regenerate["timeout-minutes"]
    inputs = workflow[True]["workflow_dispatch"]["inputs"]  # YAML 1.1 reads `on` as True
    assert "max_cost" in inputs
    assert "inputs.max_cost || vars.LLM_MAX_COST" in regenerate["env"]["MAX_COST"]
