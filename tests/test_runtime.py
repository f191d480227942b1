"""flows/runtime.py with real processes: the managed Prefect server, the ephemeral opt-out,
signals at several moments, a server lost mid-run, checks made before Prefect starts.

Every test has its own Prefect home (a temporary folder) unless it says otherwise, and stops
every server and command it started, by pid, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.runtime import STATE_FILE, ManagedServer, _pid_alive

pytestmark = pytest.mark.timeout(600)

CLI = str(Path(sys.executable).parent / "llm-conductor")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "prompts"
START_BOUND = 240  # seconds a server start may take on a busy 2-core machine


def home_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"),
        LLM_CONDUCTOR_SERVER_STARTUP_TIMEOUT=str(START_BOUND),
        **extra,
    )
    env.pop("LLM_CONDUCTOR_EPHEMERAL", None)
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A Prefect home whose managed server (if any) is stopped at the end."""
    yield tmp_path
    stop_servers(tmp_path)


def stop_servers(home: Path) -> None:
    """The managed server by its state file, then any process left using this Prefect home
    (a test that failed half-way), by pid."""
    ManagedServer(home / "prefect").stop()
    marker = f"PREFECT_HOME={home / 'prefect'}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker + b"\0" in (entry / "environ").read_bytes() + b"\0":
                    os.kill(int(entry.name), signal.SIGKILL)


def cli(
    env: dict[str, str], *args: str, timeout: float = START_BOUND + 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_for(condition, what: str, timeout: float = START_BOUND) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def prompts(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"p{i:02}.md.prompt.md").write_text(f"prompt number {i}")
    return folder


def outputs(out: Path) -> list[Path]:
    return sorted(out.glob("*.md"))


def openai_env(env: dict[str, str], llm_server) -> dict[str, str]:  # noqa: ANN001
    return {
        **env,
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "sk-x",
        "LITELLM_TIMEOUT": "30",
    }


def batch_argv(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        CLI,
        *extra,
        "batch",
        "-p",
        "openai",
        "-m",
        "m",
        "-j",
        "2",
        "-i",
        str(src),
        "-o",
        str(out),
    ]


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        argv,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


# -- the managed server ----------------------------------------------------------------------


def test_managed_server_started_once_found_by_the_next_command_and_stopped(home, tmp_path):
    env = home_env(home)
    assert cli(env, "server", "status").returncode == 3

    first = cli(env, "batch", "-p", "random", "-r", "-i", str(EXAMPLES), "-o", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    ui = re.search(r"Prefect server started: UI at (http://127\.0\.0\.1:\d+)", first.stderr)
    assert ui, first.stderr
    assert "5 ok, 0 failed" in first.stderr

    second = cli(env, "batch", "-p", "random", "-r", "-i", str(EXAMPLES), "-o", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert "Prefect server started" not in second.stderr  # it connected to the first one
    assert "5 ok, 0 failed" in second.stderr

    status = cli(env, "server", "status")
    assert status.returncode == 0 and f"UI {ui.group(1)}" in status.stdout, status.stdout
    pid = json.loads((home / "prefect" / STATE_FILE).read_text())["pid"]
    assert _pid_alive(pid)

    stopped = cli(env, "server", "stop")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    assert not _pid_alive(pid)
    assert cli(env, "server", "status").returncode == 3


def test_two_commands_starting_at_once_end_with_one_server(home):
    env = home_env(home)
    argv = [CLI, "server", "start"]
    with started(argv, env) as one, started(argv, env) as two:
        results = [p.communicate(timeout=START_BOUND + 60) for p in (one, two)]
        codes = [one.returncode, two.returncode]
    assert codes == [0, 0], results
    pids = {re.search(r"pid (\d+)", out).group(1) for out, _err in results}  # type: ignore[union-attr]
    assert len(pids) == 1, results
    servers = [
        p
        for p in descendants(1)
        if b"prefect\x00server\x00start" in _cmdline(p) and str(home) in _environ_home(p)
    ]
    assert servers == [int(pids.pop())]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _environ_home(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


# -- ephemeral mode ------------------------------------------------------------------------


def test_kill_9_in_ephemeral_mode_leaves_no_prefect_server(home, tmp_path, llm_server):
    llm_server.latency = 0.3
    src, out = prompts(tmp_path / "in", 30), tmp_path / "out"
    env = openai_env(home_env(home), llm_server)
    with started(batch_argv(src, out, "--ephemeral"), env) as process:
        wait_for(lambda: len(outputs(out)) >= 2 or process.poll() is not None, "outputs")
        assert process.poll() is None, process.communicate()
        children = descendants(process.pid)
        servers = [p for p in children if b"uvicorn" in _cmdline(p)]
        assert servers, "no ephemeral API server process found"
        try:
            os.kill(process.pid, signal.SIGKILL)  # the command alone, not its group
            process.wait()
            wait_for(lambda: not any(_pid_alive_any(p) for p in servers), "the server to die", 30)
        finally:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert not (home / "prefect" / STATE_FILE).exists()  # no managed server either


def test_kill_9_of_the_web_page_in_ephemeral_mode_leaves_no_prefect_server(home, unused_port):
    import urllib.request

    env = home_env(home)
    argv = [CLI, "--ephemeral", "web", "--port", str(unused_port), "--output-root", str(home)]

    def ready() -> bool:
        try:
            url = f"http://127.0.0.1:{unused_port}/api/state"
            with urllib.request.urlopen(url, timeout=5) as reply:
                return json.loads(reply.read())["prefect"]["ready"] is True
        except OSError:
            return False

    with started(argv, env) as process:
        wait_for(lambda: ready() or process.poll() is not None, "the page's Prefect API")
        assert process.poll() is None, process.communicate()
        children = descendants(process.pid)
        servers = [p for p in children if b"uvicorn" in _cmdline(p)]
        assert servers, "no ephemeral API server process found"
        try:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            wait_for(lambda: not any(_pid_alive_any(p) for p in servers), "the server to die", 30)
        finally:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _pid_alive_any(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- checked before Prefect starts ---------------------------------------------------------


def test_a_second_batch_on_a_locked_output_dir_is_refused_before_prefect_starts(home, tmp_path):
    from tasks.manifest import BatchLock

    src, out = prompts(tmp_path / "in", 3), tmp_path / "out"
    env = home_env(home)
    code = (
        "import sys\n"
        "from flows.cli import main\n"
        "try:\n"
        "    main(['batch', '-p', 'random', '-i', sys.argv[1], '-o', sys.argv[2]])\n"
        "except SystemExit as done:\n"
        "    print(done.code, 'prefect' in sys.modules)\n"
    )
    with BatchLock(out):
        result = subprocess.run(
            [sys.executable, "-c", code, str(src), str(out)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "in use by another batch run" in result.stderr
    assert not (home / "prefect" / STATE_FILE).exists(), "a Prefect server was started"


def test_an_explore_topic_without_a_folder_name_is_refused_before_prefect_starts(home, tmp_path):
    done = subprocess.run(
        [CLI, "explore", "-t", "???", "--routing-config", "random:random", "--iterations", "1"],
        env=home_env(home),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: topic '???' has no letters or digits to name its folder"
    ]
    assert not (home / "prefect" / STATE_FILE).exists(), "a Prefect server was started"


# -- signals -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One managed server for the tests that only need one running."""
    home = tmp_path_factory.mktemp("warm")
    started_ = cli(home_env(home), "server", "start")
    assert started_.returncode == 0, started_.stderr
    yield home
    stop_servers(home)


def sent_after(llm_server, count_at_signal: int) -> int:  # noqa: ANN001
    return len(llm_server.requests) - count_at_signal


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_batch_signal_mid_run_stops_sending_and_a_rerun_completes(
    warm_home, tmp_path, llm_server, signum, code
):
    llm_server.latency = 0.3
    src, out = prompts(tmp_path / "in", 30), tmp_path / "out"
    env = openai_env(home_env(warm_home), llm_server)
    argv = batch_argv(src, out)
    with started(argv, env) as process:
        wait_for(lambda: len(outputs(out)) >= 3 or process.poll() is not None, "outputs")
        assert process.poll() is None, process.communicate()
        at_signal = len(llm_server.requests)
        process.send_signal(signum)
        _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert sent_after(llm_server, at_signal) <= 2, "requests were sent after the signal"
    assert "Traceback" not in stderr, stderr
    assert len(outputs(out)) < 30
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(outputs(out)) == 30


@pytest.mark.parametrize(
    ("command", "signum"),
    [("batch", signal.SIGINT), ("batch", signal.SIGTERM), ("explore", signal.SIGINT)],
)
def test_signal_while_the_server_starts_sends_nothing(home, tmp_path, llm_server, command, signum):
    src, out = prompts(tmp_path / "in", 5), tmp_path / "out"
    env = openai_env(home_env(home), llm_server)
    argv = batch_argv(src, out)
    if command == "explore":
        argv = [CLI, "explore", "-t", "rivers", "--iterations", "3", "-o", str(out)]
        argv += ["--routing-config", "openai:m"]
        counter = iter(range(10**6))
        llm_server.reply = lambda _body: "\n".join(f"{i}. river {next(counter)}" for i in range(3))
    state = home / "prefect" / STATE_FILE
    with started(argv, env) as process:
        wait_for(lambda: state.exists() or process.poll() is not None, "the server's start")
        process.send_signal(signum)
        _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    assert llm_server.requests == [] and outputs(out) == []
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    if command == "batch":
        assert len(outputs(out)) == 5
    else:
        assert json.loads((out / "output.json").read_text()), "nothing explored"


def test_a_second_ctrl_c_while_stopping_exits_at_once(home, tmp_path, llm_server):
    """The stop waits on a Prefect server that no longer answers (stopped with SIGSTOP):
    the second Ctrl-C ends the command there and then."""
    llm_server.latency = 0.3
    src, out = prompts(tmp_path / "in", 30), tmp_path / "out"
    env = openai_env(home_env(home), llm_server)
    with started(batch_argv(src, out), env) as process:
        wait_for(lambda: len(outputs(out)) >= 2 or process.poll() is not None, "outputs")
        assert process.poll() is None, process.communicate()
        pid = json.loads((home / "prefect" / STATE_FILE).read_text())["pid"]
        os.killpg(pid, signal.SIGSTOP)
        try:
            process.send_signal(signal.SIGINT)
            first = ""
            while "stopping:" not in first:  # the first one is being handled
                first = process.stderr.readline()  # type: ignore[union-attr]
                assert first, "the command ended without saying it was stopping"
            process.send_signal(signal.SIGINT)
            _stdout, stderr = process.communicate(timeout=60)
        finally:
            os.killpg(pid, signal.SIGCONT)
    assert process.returncode == 130, stderr
    assert "interrupted again: exiting now" in stderr, stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_explore_signal_mid_run_flushes_and_stops_sending(
    warm_home, tmp_path, llm_server, signum, code
):
    llm_server.latency = 0.3
    counter = iter(range(10**6))
    llm_server.reply = lambda _body: "\n".join(f"{i}. thing {next(counter)}" for i in range(3))
    topic = tmp_path / "topic"
    env = openai_env(home_env(warm_home), llm_server)
    argv = [
        CLI,
        "explore",
        "-t",
        "colours",
        "--producers",
        "2",
        "-o",
        str(topic),
        "--routing-config",
        "openai:m",
    ]
    with started(argv, env) as process:
        wait_for(lambda: len(llm_server.requests) >= 3 or process.poll() is not None, "requests")
        assert process.poll() is None, process.communicate()
        at_signal = len(llm_server.requests)
        process.send_signal(signum)
        _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert sent_after(llm_server, at_signal) <= 2, "requests were sent after the signal"
    assert "Traceback" not in stderr, stderr
    data = json.loads((topic / "output.json").read_text())
    assert data, "nothing flushed"


# -- a lost server -------------------------------------------------------------------------


def test_server_killed_mid_batch_exits_1_with_one_line(home, tmp_path, llm_server):
    llm_server.latency = 0.3
    src, out = prompts(tmp_path / "in", 40), tmp_path / "out"
    env = openai_env(home_env(home), llm_server)
    with started(batch_argv(src, out), env) as process:
        wait_for(lambda: len(outputs(out)) >= 3 or process.poll() is not None, "outputs")
        assert process.poll() is None, process.communicate()
        pid = json.loads((home / "prefect" / STATE_FILE).read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if "stopped answering" in line]
    assert len(lines) == 1 and "llm-conductor server start" in lines[0], stderr
    assert "Traceback" not in stderr, stderr
    assert len(outputs(out)) < 40


# -- stderr, states and logs ---------------------------------------------------------------


def test_failing_prompts_one_line_each_and_the_flow_run_ends_failed_with_counts(
    warm_home, tmp_path, llm_server
):
    import asyncio

    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    llm_server.reply = "plain text, no JSON here"
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "good.prompt.md").write_text("say something")
    (src / "bad.json.prompt.md").write_text("answer in JSON")
    (src / "worse.json.prompt.md").write_text("answer in JSON too")
    env = {**openai_env(home_env(warm_home), llm_server), "LITELLM_APP_RETRIES": "0"}
    done = subprocess.run(
        [CLI, "batch", "-p", "openai", "-m", "m", "-i", str(src), "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Finished in state" not in done.stderr, done.stderr
    failed = [line for line in done.stderr.splitlines() if "failed " in line and ".json" in line]
    assert len(failed) == 2, done.stderr
    assert "1 ok, 2 failed, 0 up to date" in done.stderr

    api_url = ManagedServer(warm_home / "prefect").running().api_url  # type: ignore[union-attr]

    async def flow_run_and_logs():  # noqa: ANN202
        async with PrefectClient(api_url) as client:
            runs = await client.read_flow_runs()
            [run] = [r for r in runs if r.parameters.get("output_dir") == str(out)]
            deadline = time.monotonic() + 60
            while True:  # logs are sent in batches
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
                )
                messages = [log.message for log in logs]
                if any(m.startswith("batch: ") for m in messages) or time.monotonic() > deadline:
                    return run, messages
                await asyncio.sleep(0.5)

    run, messages = asyncio.run(flow_run_and_logs())
    assert run.state.is_failed() and run.state.message == "1 ok, 2 failed, 0 up to date"
    assert any(m.startswith("ok good.prompt.md") for m in messages), messages
    assert any(m.startswith("failed bad.json.prompt.md") for m in messages), messages
    assert any(m.startswith("batch: 3 prompts") for m in messages), messages


def test_deployments_setup_uses_the_managed_server(warm_home):
    env = home_env(warm_home)
    done = subprocess.run(
        [sys.executable, "-m", "deployments.setup", "--no-env-blocks"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    api_url = ManagedServer(warm_home / "prefect").running().api_url  # type: ignore[union-attr]
    assert f"registered at {api_url}" in done.stdout, done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "deployments.setup", "--no-env-blocks"],
        env={**env, "LLM_CONDUCTOR_EPHEMERAL": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "keeps running" in refused.stderr, refused.stderr


def test_the_web_page_says_when_its_server_dies_and_the_next_start_starts_it_again(
    home, unused_port
):
    import urllib.request

    env = home_env(home)
    base = f"http://127.0.0.1:{unused_port}"
    argv = [CLI, "web", "--port", str(unused_port), "--output-root", str(home / "topics")]

    def prefect() -> dict:
        try:
            with urllib.request.urlopen(f"{base}/api/state", timeout=5) as reply:
                return json.loads(reply.read())["prefect"]
        except OSError:
            return {}

    with started(argv, env) as process:
        wait_for(lambda: prefect().get("ready") is True or process.poll() is not None, "ready")
        assert process.poll() is None, process.communicate()
        first = json.loads((home / "prefect" / STATE_FILE).read_text())["pid"]
        os.killpg(first, signal.SIGKILL)
        wait_for(lambda: "stopped answering" in (prefect().get("error") or ""), "the error", 90)
        form = {"topic": "rivers", "iterations": 1, "routing_config": "random:random"}
        request = urllib.request.Request(
            f"{base}/api/start",
            data=json.dumps(form).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status == 202
        wait_for(lambda: prefect().get("ready") is True, "the server started again")
        second = json.loads((home / "prefect" / STATE_FILE).read_text())["pid"]
        assert second != first and _pid_alive(second)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_cli_is_imported_is_one_line(project_root, signum):
    """The console script takes the signals before importing the CLI: a signal that lands
    while typer is being imported ends the command with one line and 128 + the signal, not
    with the traceback of an import. The signal is sent from inside that import, so the
    moment is exact."""
    code = f"""
import builtins, os, sys
real_import = builtins.__import__

def importing(name, *args, **kwargs):
    if name == "typer" and "typer" not in sys.modules:
        os.kill(os.getpid(), {int(signum)})
    return real_import(name, *args, **kwargs)

builtins.__import__ = importing
sys.argv = ["llm-conductor", "list"]
from flows.console import main
main()
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project_root, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stderr) == (128 + signum, "Error: interrupted\n")
    assert result.stdout == ""
