"""Tracing to MLflow and OpenTelemetry, against real receivers on 127.0.0.1.

MLflow writes to a sqlite store in tmp_path and the traces are read back through MLflow's own
API; OpenTelemetry exports OTLP/HTTP to ``OTLPReceiver``, a small HTTP server that decodes
the protobuf ``ExportTraceServiceRequest`` with opentelemetry-proto.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from blocks import LLMProvider, tracing

KEY = "sk-test-SECRET-4f9a2c7e"  # the block's API key: must never reach a span
ENV_KEY = "sk-env-SECRET-81d0b3aa"  # an API key in the environment: same
TRACING_ENV = (
    "LITELLM_MLFLOW_ENABLED",
    "LITELLM_OTEL_ENABLED",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "TRACELOOP_BASE_URL",
    "TRACELOOP_TRACE_RATE",
    "TRACELOOP_HEADERS",
    "TRACELOOP_TRACE_CONTENT",
    "TRACELOOP_TELEMETRY_ENABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    tracing.CONTENT_ENV,
)


# --------------------------------------------------------------------------------------------
# An OTLP/HTTP receiver
# --------------------------------------------------------------------------------------------


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]


class OTLPReceiver:
    """``POST /v1/traces`` on 127.0.0.1: keeps the raw bodies and the decoded spans."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.bodies: list[bytes] = []
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    receiver.paths.append(self.path)
                    receiver.bodies.append(body)
                    receiver.spans.extend(_decode(request))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        self.bodies.clear()
        self.spans.clear()


def _decode(request: Any) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = {a.key: any_value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes={a.key: any_value(a.value) for a in span.attributes},
                    events=[
                        (e.name, {a.key: any_value(a.value) for a in e.attributes})
                        for e in span.events
                    ],
                    resource=resource,
                )


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tracing_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No tracing variable from outside; tracing state rebuilt before and torn down after."""
    for name in TRACING_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    tracing.reset()
    yield monkeypatch
    tracing.reset()  # flushes and shuts down: no provider leaks into the next test


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def openai_provider(server: Any, **kw: Any) -> LLMProvider:
    values: dict[str, Any] = dict(
        kind="openai",
        model="test-model",
        api_base=server.base_url,
        api_key=KEY,
        backoff_base=0.0,
        timeout=60,  # a busy CI machine must not turn a slow answer into a retry
        retries=1,
    )
    values.update(kw)
    return LLMProvider(**values)


def write_prompts(folder: Path, count: int, words: str = "tell me about") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    texts = [f"prompt {i}: {words} river {i}" for i in range(count)]
    for i, text in enumerate(texts):
        (folder / f"p{i}.md.prompt.md").write_text(text)
    return texts


def run_batch_traced(provider: LLMProvider, src: Path, out: Path) -> Any:
    from flows.batch import run_batch

    summary = run_batch(provider, src, out, force=True)
    tracing.flush()
    return summary


def flow_run_name(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(uuid.UUID(flow_run_id))
            return run.name

    return asyncio.run(read())


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_batch_to_mlflow_and_otel_at_once(tracing_env, receiver, llm_server, tmp_path):
    """One batch, both backends: MLflow's store holds one trace for the flow run, with one
    LLM span per prompt under it; the collector gets the same; no API key anywhere."""
    import mlflow

    tracing_env.setenv("LITELLM_MLFLOW_ENABLED", "true")
    tracing_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracing_env.setenv("MLFLOW_EXPERIMENT_NAME", "conductor-test")
    tracing_env.setenv("LITELLM_OTEL_ENABLED", "1")
    tracing_env.setenv("TRACELOOP_BASE_URL", receiver.url)
    src, out = tmp_path / "in", tmp_path / "out"
    write_prompts(src, 4, words=f"my key is {KEY} and {ENV_KEY}, now tell me about")
    # One prompt is rejected with a message that quotes the key, as real APIs do.
    llm_server.enqueue(401, message=f"Incorrect API key provided: {KEY}")

    had_telemetry_switch = "MLFLOW_DISABLE_TELEMETRY" in os.environ
    summary = run_batch_traced(openai_provider(llm_server), src, out)
    assert (summary.ok, summary.failed) == (3, 1)
    if not had_telemetry_switch:  # MLflow's usage telemetry is off unless asked for
        assert os.environ.pop("MLFLOW_DISABLE_TELEMETRY") == "true"

    experiment = mlflow.MlflowClient().get_experiment_by_name("conductor-test")
    traces = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    assert len(traces) == 1, "a batch is one trace"
    trace = traces[0]
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.name == "Run prompt batch"
    run_id = root.attributes["prefect.flow_run.id"]
    assert trace.info.tags["prefect.flow_run.id"] == run_id
    assert flow_run_name(run_id) == root.attributes["prefect.flow_run.name"]
    llm = [s for s in trace.data.spans if s is not root]
    assert len(llm) == 4 and all(s.parent_id == root.span_id for s in llm)
    for span in llm:
        a = span.attributes
        assert span.name == "chat test-model" and span.span_type == "CHAT_MODEL"
        assert a["gen_ai.system"] == "openai" and a["gen_ai.request.model"] == "test-model"
        assert a["server.address"] == "127.0.0.1"
        assert "my key is [REDACTED] and [REDACTED]" in span.inputs["messages"][0]["content"]
    ok = [s for s in llm if s.status.status_code == "OK"]
    assert len(ok) == 3
    for span in ok:
        a = span.attributes
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert "mlflow.llm.cost" not in a, "an unknown model's cost stays unknown"
        assert "[REDACTED]" in span.outputs["choices"][0]["message"]["content"]
    (failed,) = [s for s in llm if s.status.status_code == "ERROR"]
    assert failed.attributes["error.type"] == "AuthenticationFailed"
    assert failed.attributes["http.response.status_code"] == 401
    assert "Incorrect API key provided" in failed.status.description
    stored = trace.to_json()
    assert KEY not in stored and ENV_KEY not in stored

    # The collector got the same trace at the same time.
    names = sorted(s.name for s in receiver.spans)
    assert names == ["Run prompt batch"] + ["chat test-model"] * 4
    raw = b"".join(receiver.bodies)
    assert KEY.encode() not in raw and ENV_KEY.encode() not in raw
    assert b"[REDACTED]" in raw


@pytest.mark.usefixtures("prefect_harness")
def test_batch_to_otlp_receiver(tracing_env, receiver, llm_server, tmp_path):
    """Parent/child structure and GenAI attributes as decoded from OTLP; then content capture
    off removes every prompt and answer; then sampling at 0 sends nothing."""
    tracing_env.setenv("LITELLM_OTEL_ENABLED", "true")
    tracing_env.setenv("TRACELOOP_BASE_URL", receiver.url + "/")
    tracing_env.setenv("OTEL_SERVICE_NAME", "conductor-test")
    tracing_env.setenv("TRACELOOP_TELEMETRY_ENABLED", "false")
    src, out = tmp_path / "in", tmp_path / "out"
    prompts = write_prompts(src, 3)
    llm_server.enqueue(503, times=1)  # one retry, recorded as an event
    llm_server.length_rounds = 1  # one answer cut off and continued

    assert run_batch_traced(openai_provider(llm_server), src, out).ok == 3
    assert set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans
    assert len(spans) == 4
    (root,) = [s for s in spans if not s.parent_span_id]
    assert root.name == "Run prompt batch" and root.kind == 1  # INTERNAL
    assert uuid.UUID(root.attributes["prefect.flow_run.id"])
    assert root.attributes["prefect.flow.name"] == "Run prompt batch"
    assert root.resource["service.name"] == "conductor-test"
    llm = [s for s in spans if s.parent_span_id]
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert all(s.parent_span_id == root.span_id for s in llm)
    for span in llm:
        a = span.attributes
        assert span.kind == 3  # CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "test-model"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert "gen_ai.usage.cost" not in a, "unknown cost is left out, never guessed"
        assert a["server.port"] == llm_server.port
        sent = json.loads(a["gen_ai.input.messages"])
        assert sent[0]["role"] == "user" and sent[0]["parts"][0]["content"] in prompts
        answer = json.loads(a["gen_ai.output.messages"])[0]
        assert answer["role"] == "assistant" and answer["parts"][0]["content"]
    segments = sorted(s.attributes["llm_conductor.segments"] for s in llm)
    assert segments == [1, 1, 2], "one span per completion, continuation included"
    retried = [s for s in llm if s.attributes.get("llm_conductor.retries")]
    assert len(retried) == 1 and retried[0].attributes["llm_conductor.retries"] == 1
    assert [name for name, _ in retried[0].events] == ["retry"]
    assert retried[0].events[0][1]["error.type"] == "ProviderUnavailable"
    for span in llm:
        a = span.attributes
        assert a["llm_conductor.attempts"] == a["llm_conductor.segments"] + a.get(
            "llm_conductor.retries", 0
        )

    # Content capture off: the same spans, without a word of any prompt or answer.
    tracing.reset()
    tracing_env.setenv(tracing.CONTENT_ENV, "false")
    receiver.clear()
    assert run_batch_traced(openai_provider(llm_server), src, out).ok == 3
    assert len(receiver.spans) == 4
    for span in receiver.spans:
        assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & span.attributes.keys()
    raw = b"".join(receiver.bodies)
    assert b"river" not in raw and b"tell me" not in raw

    # Sampling at 0: the flow run's trace is dropped, with every LLM span in it.
    tracing.reset()
    tracing_env.setenv("TRACELOOP_TRACE_RATE", "0")
    receiver.clear()
    assert run_batch_traced(openai_provider(llm_server), src, out).ok == 3
    assert receiver.spans == []
    assert len(llm_server.requests) == 11


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "system"), [("claude-code", "anthropic"), ("openai-codex", "openai")]
)
async def test_cli_provider_call_is_a_span(tracing_env, receiver, fake_cli_path, kind, system):
    """The `claude` and `codex` CLIs (fakes speaking their JSON) are traced like any HTTP
    provider, with their reported usage (and cost, when the CLI reports one), under the
    single-prompt span."""
    from flows.single import run_single

    tracing_env.setenv("LITELLM_OTEL_ENABLED", "true")
    tracing_env.setenv("TRACELOOP_BASE_URL", receiver.url)
    fake_cli_path.set_reply("The Rhine, the Danube and the Loire.")
    completion = await run_single("Name three rivers", LLMProvider(kind=kind))
    assert completion.text == "The Rhine, the Danube and the Loire."
    tracing.flush()

    (root,) = [s for s in receiver.spans if not s.parent_span_id]
    (call,) = [s for s in receiver.spans if s.parent_span_id == root.span_id]
    assert root.name == "Complete one prompt"
    # No model set: the CLI's own default, so the span is named after the provider.
    assert call.name == f"chat {completion.model or kind}" and call.trace_id == root.trace_id
    a = call.attributes
    assert a["gen_ai.system"] == system and a["llm_conductor.provider"] == kind
    assert a.get("gen_ai.request.model") == (completion.model or None)
    assert a["gen_ai.usage.input_tokens"] == completion.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == completion.completion_tokens > 0
    assert a.get("gen_ai.usage.cost") == completion.cost
    assert a["gen_ai.response.finish_reasons"] == [completion.finish_reason or "unknown"]
    assert "Rhine" in a["gen_ai.output.messages"] and "server.address" not in a
    assert "Name three rivers" in a["gen_ai.input.messages"]


@pytest.mark.usefixtures("prefect_harness")
def test_single_flow_run_is_one_trace(tracing_env, receiver, llm_server):
    """With a Prefect API, a single prompt is a flow run: its span carries the run's id and
    name, and the LLM call is its child."""
    from flows.single import run_single

    tracing_env.setenv("LITELLM_OTEL_ENABLED", "true")
    tracing_env.setenv("TRACELOOP_BASE_URL", receiver.url)
    llm_server.reply = "Rhine"
    completion = asyncio.run(run_single("Name a river", openai_provider(llm_server)))
    assert completion.text == "Rhine"
    tracing.flush()

    (root,) = [s for s in receiver.spans if not s.parent_span_id]
    (call,) = [s for s in receiver.spans if s.parent_span_id]
    assert root.name == "Complete one prompt" and call.parent_span_id == root.span_id
    run_id = root.attributes["prefect.flow_run.id"]
    assert flow_run_name(run_id) == root.attributes["prefect.flow_run.name"]
    assert call.attributes["gen_ai.response.id"] == completion.response_id
    assert call.attributes["gen_ai.usage.output_tokens"] == completion.completion_tokens


@pytest.mark.usefixtures("prefect_harness")
def test_explore_flow_run_is_one_trace(tracing_env, receiver, llm_server, tmp_path):
    """Every request of every producer of an exploration is an LLM span in the flow run's
    trace, the router's failed attempts included."""
    from flows.explore import explore_topic

    tracing_env.setenv("LITELLM_OTEL_ENABLED", "true")
    tracing_env.setenv("TRACELOOP_BASE_URL", receiver.url)
    tracing_env.setenv("OPENAI_BASE_URL", llm_server.base_url)
    counter = iter(range(10**6))
    llm_server.reply = lambda body: "\n".join(f"{i}. thing {next(counter)}" for i in range(3))
    llm_server.enqueue(500, times=1)  # one failed request, retried by the router

    summary = asyncio.run(
        explore_topic(
            topic="Rivers",
            producers=3,
            iterations=6,
            routing_strategy="priority",
            routing_config="openai:m1",
            output=str(tmp_path / "out"),
            seed=1,
        )
    )
    assert summary.batches == 6 and summary.failures == 1
    tracing.flush()

    (root,) = [s for s in receiver.spans if not s.parent_span_id]
    assert root.name == "Explore a topic" and uuid.UUID(root.attributes["prefect.flow_run.id"])
    llm = [s for s in receiver.spans if s.parent_span_id]
    assert len(llm) == len(llm_server.requests) == summary.requests == 7  # 6 batches, 1 failure
    assert all(s.parent_span_id == root.span_id and s.trace_id == root.trace_id for s in llm)
    assert {s.attributes["gen_ai.request.model"] for s in llm} == {"m1"}
    (failed,) = [s for s in llm if s.status_code == 2]  # ERROR
    assert failed.attributes["http.response.status_code"] == 500
    assert ENV_KEY.encode() not in b"".join(receiver.bodies)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"content": True, "otel_endpoint": None, "sample_rate": 1.0, "telemetry": False}),
        (
            {"TRACELOOP_BASE_URL": "http://c:4318/", "TRACELOOP_TRACE_RATE": "0.25"},
            {"otel_endpoint": "http://c:4318/v1/traces", "sample_rate": 0.25},
        ),
        (
            {"TRACELOOP_BASE_URL": "http://c:4318/v1/traces"},
            {"otel_endpoint": "http://c:4318/v1/traces"},
        ),
        ({"TRACELOOP_TRACE_RATE": "7"}, {"sample_rate": 1.0}),
        ({"TRACELOOP_TRACE_CONTENT": "false"}, {"content": False}),
        ({tracing.CONTENT_ENV: "true", "TRACELOOP_TRACE_CONTENT": "false"}, {"content": True}),
        ({"TRACELOOP_TELEMETRY_ENABLED": "true"}, {"telemetry": True}),
        (
            {
                "OTEL_SERVICE_NAME": "svc",
                "MLFLOW_EXPERIMENT_NAME": "exp",
                "TRACELOOP_HEADERS": "a=b%3D,c=d",
            },
            {
                "service_name": "svc",
                "experiment_name": "exp",
                "otel_headers": {"a": "b=", "c": "d"},
            },
        ),
    ],
)
def test_settings_from_env(tracing_env, env, expected):
    for name, value in env.items():
        tracing_env.setenv(name, value)
    settings = tracing.Settings.from_env()
    assert {k: getattr(settings, k) for k in expected} == expected


@pytest.mark.asyncio
async def test_missing_extra_warns_once_and_the_run_goes_on(tracing_env, monkeypatch, capsys):
    """Without the observability extra: one line on stderr, and the call succeeds."""
    for name in list(sys.modules):  # None in sys.modules makes `import name` fail
        if name.startswith(("mlflow", "opentelemetry.sdk", "opentelemetry.exporter")):
            monkeypatch.setitem(sys.modules, name, None)
    for name in ("mlflow", "opentelemetry.sdk", "opentelemetry.exporter"):
        monkeypatch.setitem(sys.modules, name, None)
    tracing_env.setenv("LITELLM_MLFLOW_ENABLED", "true")
    tracing_env.setenv("LITELLM_OTEL_ENABLED", "true")

    with tracing.flow_span("Run prompt batch"):
        completion = await LLMProvider(kind="random").acomplete("Give me a list of rivers")
    assert completion.text
    assert not tracing.enabled()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "llm-conductor:" in line]
    assert len(lines) == 1, err
    assert "LITELLM_MLFLOW_ENABLED" in lines[0] and "LITELLM_OTEL_ENABLED" in lines[0]
    assert "llm-conductor[observability]" in lines[0]


def test_off_by_default_imports_nothing(project_root):
    """Tracing off: a call goes through without importing MLflow or the OpenTelemetry SDK."""
    code = (
        "import asyncio, sys\n"
        "from blocks import LLMProvider, tracing\n"
        "from flows.batch import run_prompt_batch\n"
        "with tracing.flow_span('x'):\n"
        "    asyncio.run(LLMProvider(kind='random').acomplete('hello'))\n"
        "assert tracing.flow_span('x') is tracing.NO_SPAN\n"
        "loaded = [m for m in sys.modules if m.startswith(('mlflow', 'opentelemetry.sdk'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in TRACING_ENV}
    env.pop("LITELLM_MLFLOW_ENABLED", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=project_root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.asyncio
async def test_traced_flow_keeps_the_flow_and_works_on_plain_functions(tracing_env, receiver):
    """Above @flow the Flow keeps its name, parameters and version; on a plain coroutine
    function it opens a flow span too; errors mark the span and propagate."""
    from prefect.utilities.hashing import file_hash

    from flows.batch import run_prompt_batch

    assert run_prompt_batch.name == "Run prompt batch"
    assert "input_dir" in run_prompt_batch.parameters.properties
    batch_file = inspect.getsourcefile(run_prompt_batch.fn.__wrapped__)
    assert batch_file and batch_file.endswith("batch.py")
    assert run_prompt_batch.version == file_hash(batch_file), "still batch.py's hash"

    tracing_env.setenv("LITELLM_OTEL_ENABLED", "true")
    tracing_env.setenv("TRACELOOP_BASE_URL", receiver.url)

    @tracing.traced_flow
    async def explore(topic: str) -> str:
        await LLMProvider(kind="random").acomplete(f"list facts about {topic}")
        raise RuntimeError("producer stopped")

    with pytest.raises(RuntimeError):
        await explore("rivers")
    tracing.flush()
    (root,) = [s for s in receiver.spans if not s.parent_span_id]
    (call,) = [s for s in receiver.spans if s.parent_span_id]
    assert root.name == "explore" and root.status_code == 2  # ERROR
    assert root.attributes["error.type"] == "RuntimeError"
    assert call.trace_id == root.trace_id and call.attributes["gen_ai.system"] == "random"


def test_grpc_port_gets_a_warning(capsys):
    """4317 is OTLP/gRPC's port; spans are sent as OTLP/HTTP, so that is worth one line."""
    settings = tracing.Settings(otel=True, otel_endpoint="http://127.0.0.1:4317/v1/traces")
    backend = tracing._OTelBackend(settings)
    backend.shutdown()
    (line,) = capsys.readouterr().err.splitlines()
    assert "4317" in line and "4318" in line


def test_the_first_span_opens_after_start_up(llm_server, project_root):
    """A fresh process's first LLM span must not hold its start-up (importing litellm took
    5 s of a 0.4 s call's span): the backend is imported and prepared before the span opens.
    Checked in a new process, where litellm is not imported yet."""
    code = f"""
import asyncio, sys
from blocks import LLMProvider, tracing

seen = []
real = tracing.llm_span

def spy(*args, **kwargs):
    seen.append("litellm" in sys.modules)
    return real(*args, **kwargs)

tracing.llm_span = spy
assert "litellm" not in sys.modules
block = LLMProvider(kind="openai", model="m", api_base={llm_server.base_url!r}, api_key="sk-x")
asyncio.run(block.acomplete("hi"))
print(seen)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[True]"
