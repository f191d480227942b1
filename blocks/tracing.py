"""Tracing of flow runs and LLM calls to MLflow and/or OpenTelemetry (OTLP over HTTP).

Off unless switched on by the environment; when off, every entry point returns a shared no-op
object and neither MLflow nor the OpenTelemetry SDK is imported.

=============================== ==============================================================
``LITELLM_MLFLOW_ENABLED``      ``true``: traces go to MLflow (``mlflow-skinny``)
``MLFLOW_TRACKING_URI``         MLflow store or server; MLflow's default (``sqlite:///mlflow.db``)
``MLFLOW_EXPERIMENT_NAME``      experiment, created when missing (default ``llm-conductor``)
``LITELLM_OTEL_ENABLED``        ``true``: spans go to an OTLP/HTTP collector
``TRACELOOP_BASE_URL``          collector, e.g. ``http://127.0.0.1:4318`` (``/v1/traces`` is added)
``TRACELOOP_TRACE_RATE``        fraction of flow runs (traces) sampled, 0.0-1.0 (default 1.0)
``TRACELOOP_HEADERS``           ``key=value,key2=value2`` sent with each export (e.g. auth)
``OTEL_SERVICE_NAME``           ``service.name`` of the spans (default ``llm-conductor``)
``TRACELOOP_TELEMETRY_ENABLED`` ``true``: lets MLflow send its anonymous usage telemetry
                                (default: ``MLFLOW_DISABLE_TELEMETRY=true`` is set, unless set)
``LLM_CONDUCTOR_TRACE_CONTENT`` ``false``: no prompt or completion text in any span
                                (``TRACELOOP_TRACE_CONTENT`` is read when this one is unset)
=============================== ==============================================================

The API our code uses is three names:

* ``flow_span(name, flow_run_id=None, **attributes)``: the root of one trace (a flow run);
  spans opened inside it, in the same task or in tasks it awaits, are its children.
* ``traced_flow``: a decorator that opens ``flow_span`` around a Prefect flow's body with the
  flow run's id and name: put it on the line above ``@flow(...)``.
* ``llm_span(provider, messages)``: one LLM completion, retries and continuations included,
  with OpenTelemetry GenAI semantic-convention attributes; ``span.record(completion)``.

Spans never carry API keys: none is ever set as an attribute, and any known key value (the
provider's, or any ``*_KEY``/``*_TOKEN``/``*_SECRET``/``*_PASSWORD`` variable) is replaced by
``[REDACTED]`` in every text that goes into a span (prompts, answers, error messages).
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import inspect
import json
import logging
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider
    from blocks.result import Completion

__all__ = [
    "CONTENT_ENV",
    "MLFLOW_ENV",
    "OTEL_ENV",
    "enabled",
    "flow_span",
    "flush",
    "llm_span",
    "reset",
    "traced_flow",
]

logger = logging.getLogger("llm_conductor.tracing")

MLFLOW_ENV = "LITELLM_MLFLOW_ENABLED"
OTEL_ENV = "LITELLM_OTEL_ENABLED"
CONTENT_ENV = "LLM_CONDUCTOR_TRACE_CONTENT"
EXTRA_HINT = "pip install 'llm-conductor[observability]'"
DEFAULT_SERVICE = "llm-conductor"
DEFAULT_EXPERIMENT = "llm-conductor"
REDACTED = "[REDACTED]"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_MIN_SECRET = 6  # shorter values would redact ordinary words

#: ``gen_ai.system`` / ``gen_ai.provider.name`` per provider kind (semconv well-known values).
_SYSTEMS = {
    "openai": "openai",
    "openrouter": "openrouter",
    "lmstudio": "lm_studio",
    "ollama": "ollama",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "claude-code": "anthropic",
    "openai-codex": "openai",
    "random": "random",
}

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    return default


def _warn(message: str) -> None:
    """One line on stderr (the CLI's only channel besides logs), also logged."""
    logger.debug(message)
    sys.stderr.write(f"llm-conductor: {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Settings:
    """What the environment asks for, read once per process (``reset()`` reads it again)."""

    mlflow: bool = False
    otel: bool = False
    content: bool = True
    telemetry: bool = False
    otel_endpoint: str | None = None
    otel_headers: dict[str, str] = field(default_factory=dict)
    sample_rate: float = 1.0
    service_name: str = DEFAULT_SERVICE
    experiment_name: str = DEFAULT_EXPERIMENT
    experiment_id: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        base = env.get("TRACELOOP_BASE_URL", "").strip()
        endpoint = None
        if base:
            endpoint = base.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
        return cls(
            mlflow=_flag(MLFLOW_ENV),
            otel=_flag(OTEL_ENV),
            content=_flag(CONTENT_ENV, default=_flag("TRACELOOP_TRACE_CONTENT", default=True)),
            telemetry=_flag("TRACELOOP_TELEMETRY_ENABLED"),
            otel_endpoint=endpoint,
            otel_headers=_parse_headers(env.get("TRACELOOP_HEADERS", "")),
            sample_rate=_parse_rate(env.get("TRACELOOP_TRACE_RATE", "")),
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE,
            experiment_name=env.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT,
            experiment_id=env.get("MLFLOW_EXPERIMENT_ID", "").strip() or None,
        )


def _parse_rate(raw: str) -> float:
    if not raw.strip():
        return 1.0
    try:
        rate = float(raw)
    except ValueError:
        _warn(f"TRACELOOP_TRACE_RATE={raw!r} is not a number; sampling every trace")
        return 1.0
    return min(1.0, max(0.0, rate))


def _parse_headers(raw: str) -> dict[str, str]:
    headers = {}
    for item in raw.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers[unquote(name.strip())] = unquote(value.strip())
    return headers


def _env_secrets() -> frozenset[str]:
    from blocks.providers import PROVIDERS

    names = {spec.key_env for spec in PROVIDERS.values() if spec.key_env}
    names.update(name for name in os.environ if _SECRET_NAME.search(name))
    values = (os.environ.get(name, "") for name in names)
    return frozenset(v for v in values if len(v) >= _MIN_SECRET)


# --------------------------------------------------------------------------------------------
# Backends: each turns start/event/end into its own spans
# --------------------------------------------------------------------------------------------


class _OTelBackend:
    """OpenTelemetry SDK: a private TracerProvider (the global one is left alone), a ratio
    sampler on the trace root, a BatchSpanProcessor and the OTLP/HTTP exporter."""

    name = "OpenTelemetry"

    def __init__(self, settings: Settings) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode

        endpoint = settings.otel_endpoint
        if endpoint and urlsplit(endpoint).port == 4317:
            _warn(
                f"TRACELOOP_BASE_URL {endpoint} uses port 4317 (OTLP/gRPC); spans are sent "
                "as OTLP/HTTP, which collectors usually take on port 4318"
            )
        self._trace = trace
        self._kinds = {"flow": SpanKind.INTERNAL, "llm": SpanKind.CLIENT}
        self._status_error = lambda description: Status(StatusCode.ERROR, description)
        self._empty = Context()  # roots ignore any span another library made current
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_rate)),
            shutdown_on_exit=False,  # ours flushes at exit (see _Tracer)
        )
        exporter = OTLPSpanExporter(endpoint=endpoint, headers=settings.otel_headers or None)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self.provider.get_tracer("llm_conductor")

    def start(
        self, name: str, kind: str, parent: Any, attributes: dict[str, Any], content: Any
    ) -> Any:
        context = self._trace.set_span_in_context(parent) if parent is not None else self._empty
        span = self._tracer.start_span(
            name, context=context, kind=self._kinds[kind], attributes=_otel_attributes(attributes)
        )
        if content is not None and span.is_recording():
            span.set_attribute("gen_ai.input.messages", json.dumps(_otel_input(content)))
        return span

    def event(self, span: Any, name: str, attributes: dict[str, Any]) -> None:
        span.add_event(name, _otel_attributes(attributes))

    def end(
        self,
        span: Any,
        attributes: dict[str, Any],
        output: tuple[str, str | None] | None,
        error: str | None,
    ) -> None:
        if span.is_recording():
            span.set_attributes(_otel_attributes(attributes))
            if output is not None:
                text, finish = output
                message = {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": text}],
                    "finish_reason": finish or "",
                }
                span.set_attribute("gen_ai.output.messages", json.dumps([message]))
            if error is not None:
                span.set_status(self._status_error(error))
        span.end()

    def flush(self, timeout: float) -> None:
        self.provider.force_flush(int(timeout * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()


def _otel_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (str, bool, int, float)):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [str(v) for v in value]
        else:
            out[key] = json.dumps(value, default=str)
    return out


def _otel_input(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {"role": m.get("role", "user"), "parts": [{"type": "text", "content": m.get("content")}]}
        for m in messages
    ]


class _MlflowBackend:
    """MLflow tracing (``mlflow-skinny``): spans made with ``start_span_no_context`` so that
    MLflow's context never mixes with ours, sent to one experiment of the tracking store."""

    name = "MLflow"

    def __init__(self, settings: Settings) -> None:
        if not settings.telemetry:  # MLflow's usage telemetry, sent at import unless disabled
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from mlflow.entities import SpanEvent, SpanStatus, SpanStatusCode
        from mlflow.entities.trace_location import MlflowExperimentLocation

        if "MLFLOW_LOGGING_LEVEL" not in os.environ:
            # "Creating initial MLflow database tables..." and the like are not for stderr.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
        _skip_mlflow_prediction_context()
        self._mlflow = mlflow
        self._event = SpanEvent
        self._error_status = lambda description: SpanStatus(SpanStatusCode.ERROR, description)
        self.experiment_id = settings.experiment_id or _mlflow_experiment(
            mlflow.MlflowClient(), settings.experiment_name
        )
        # Takes precedence over OTEL_EXPORTER_OTLP_* variables, which would otherwise send
        # MLflow's traces to the collector instead of the tracking store.
        mlflow.tracing.set_destination(MlflowExperimentLocation(experiment_id=self.experiment_id))

    def start(
        self, name: str, kind: str, parent: Any, attributes: dict[str, Any], content: Any
    ) -> Any:
        root = parent is None
        tags = None
        if root:
            tags = {
                k: str(v)
                for k, v in attributes.items()
                if v is not None and k in ("prefect.flow_run.id", "llm_conductor.flow")
            }
        if kind == "llm":
            attributes = {
                **attributes,
                "mlflow.llm.model": attributes.get("gen_ai.request.model"),
                "mlflow.llm.provider": attributes.get("gen_ai.system"),
            }
        return self._mlflow.start_span_no_context(
            name,
            span_type="CHAT_MODEL" if kind == "llm" else "CHAIN",
            parent_span=parent,
            inputs={"messages": content} if content is not None else None,
            attributes={k: v for k, v in attributes.items() if v is not None},
            tags=tags or None,
            experiment_id=self.experiment_id if root else None,
        )

    def event(self, span: Any, name: str, attributes: dict[str, Any]) -> None:
        span.add_event(self._event(name=name, attributes=_otel_attributes(attributes)))

    def end(
        self,
        span: Any,
        attributes: dict[str, Any],
        output: tuple[str, str | None] | None,
        error: str | None,
    ) -> None:
        attributes = {k: v for k, v in attributes.items() if v is not None}
        if (cost := attributes.get("gen_ai.usage.cost")) is not None:
            # MLflow's own cost field (shown and summed per trace in its UI). An explicit null
            # for "unknown" would break MLflow 3.17's store when it sums the trace's costs.
            attributes["mlflow.llm.cost"] = {"total_cost": cost}
        outputs = None
        if output is not None:
            text, finish = output
            outputs = {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ]
            }
        span.end(
            outputs=outputs,
            attributes=attributes,
            status=self._error_status(error) if error is not None else "OK",
        )

    def flush(self, timeout: float) -> None:
        self._mlflow.flush_trace_async_logging()

    def shutdown(self) -> None:  # after flush()
        self._mlflow.tracing.reset()


def _skip_mlflow_prediction_context() -> None:
    """mlflow-skinny has no numpy/pandas, so MLflow's ``mlflow.pyfunc`` never imports; yet
    MLflow 3.17 tries that import again at every span's end to find a model-serving context
    (about 10 ms per span) and returns None when it fails. Without ``mlflow.pyfunc``, answer
    None at once: the same result, without the failing import."""
    try:
        import mlflow.pyfunc.context  # noqa: F401
    except ImportError:
        import mlflow.tracing.utils as mlflow_tracing_utils

        if hasattr(mlflow_tracing_utils, "_try_get_prediction_context"):
            mlflow_tracing_utils._try_get_prediction_context = lambda: None


def _mlflow_experiment(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # another process created it in between
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _safely(backend: Any, method: str, *args: Any) -> Any:
    """``backend.method(*args)``; a failure is logged (debug) and gives None: tracing must
    never fail a run."""
    try:
        return getattr(backend, method)(*args)
    except Exception as error:
        logger.debug("%s: %s failed: %s", backend.name, method, error)
        return None


_BACKENDS: dict[str, tuple[str, type]] = {
    "mlflow": (MLFLOW_ENV, _MlflowBackend),
    "otel": (OTEL_ENV, _OTelBackend),
}


# --------------------------------------------------------------------------------------------
# The tracer: backends + content policy + redaction
# --------------------------------------------------------------------------------------------


class _Tracer:
    def __init__(self, settings: Settings, backends: list[Any]) -> None:
        self.settings = settings
        self.backends = backends
        self.enabled = bool(backends)
        self.content = settings.content
        self.secrets = _env_secrets() if backends else frozenset()

    @classmethod
    def from_env(cls) -> _Tracer:
        settings = Settings.from_env()
        backends: list[Any] = []
        missing: list[str] = []
        for key, (env_name, backend_class) in _BACKENDS.items():
            if not getattr(settings, key):
                continue
            try:
                backends.append(backend_class(settings))
            except ImportError as error:
                missing.append(f"{env_name} ({error.name or error})")
            except Exception as error:  # a store or endpoint that cannot be used
                _warn(f"{backend_class.name} tracing off: {' '.join(str(error).split())}")
        if missing:
            _warn(
                f"tracing off for {', '.join(missing)}: the observability extra is not "
                f"installed ({EXTRA_HINT})"
            )
        return cls(settings, backends)

    def scrub(self, text: str, extra: str | None = None) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if extra and len(extra) >= _MIN_SECRET and extra in text:
            text = text.replace(extra, REDACTED)
        return text

    def flush(self, timeout: float = 10.0) -> None:
        for backend in self.backends:
            _safely(backend, "flush", timeout)

    def shutdown(self) -> None:
        for backend in self.backends:
            _safely(backend, "shutdown")


_state: _Tracer | None = None
_state_lock = threading.Lock()
_atexit_registered = False
_current: contextvars.ContextVar[_Span | None] = contextvars.ContextVar(
    "llm_conductor_flow_span", default=None
)


def _tracer() -> _Tracer:
    global _state, _atexit_registered
    state = _state
    if state is not None:
        return state
    with _state_lock:
        if _state is None:
            _state = _Tracer.from_env()
            if _state.enabled and not _atexit_registered:
                atexit.register(_shutdown_at_exit)
                _atexit_registered = True
        return _state


def _shutdown_at_exit() -> None:
    state = _state
    if state is not None:
        state.flush()
        state.shutdown()


def enabled() -> bool:
    """Whether any backend is on (reads the environment on first use)."""
    return _tracer().enabled


def flush(timeout: float = 10.0) -> None:
    """Send every finished span now (also done at exit)."""
    state = _state
    if state is not None:
        state.flush(timeout)


def reset() -> None:
    """Flush and shut every backend down; the next span reads the environment again.

    For tests and for programs that change the tracing variables while running.
    """
    global _state
    with _state_lock:
        state, _state = _state, None
    if state is not None:
        state.flush()
        state.shutdown()


# --------------------------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------------------------


class _NoSpan:
    """What every entry point returns while tracing is off: does nothing, costs nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def record(self, completion: Completion) -> None:
        pass

    def on_retry(self, error: BaseException, delay: float) -> None:
        pass


NO_SPAN = _NoSpan()


class _Span:
    """One span in every enabled backend; a flow span is the parent of later spans."""

    __slots__ = (
        "_attributes",
        "_content",
        "_end",
        "_handles",
        "_kind",
        "_name",
        "_output",
        "_secret",
        "_token",
        "_tracer",
        "retries",
    )

    def __init__(
        self,
        tracer: _Tracer,
        kind: str,
        name: str,
        attributes: dict[str, Any],
        content: list[dict[str, str]] | None = None,
        secret: str | None = None,
    ) -> None:
        self._tracer = tracer
        self._kind = kind
        self._name = name
        self._secret = secret
        self._attributes = self._clean(attributes)
        self._content = (
            [{**m, "content": self._clean_text(m.get("content", ""))} for m in content]
            if content is not None and tracer.content
            else None
        )
        self._end: dict[str, Any] = {}
        self._output: tuple[str, str | None] | None = None
        self._handles: list[Any] = []
        self._token: contextvars.Token[_Span | None] | None = None
        self.retries = 0

    def _clean_text(self, text: Any) -> Any:
        return self._tracer.scrub(text, self._secret) if isinstance(text, str) else text

    def _clean(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._clean_text(v) for k, v in attributes.items() if v is not None}

    def __enter__(self) -> _Span:
        parent = _current.get()
        if parent is not None and parent._tracer is not self._tracer:
            parent = None  # opened before a reset(): its backends are gone
        for index, backend in enumerate(self._tracer.backends):
            above = parent._handles[index] if parent is not None else None
            args = (self._name, self._kind, above, self._attributes, self._content)
            self._handles.append(_safely(backend, "start", *args))
        if self._kind == "flow":
            self._token = _current.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # exited in another context than it was entered
                _current.set(None)
        error = None
        if exc is not None:
            kind = type(exc).__name__
            error = self._clean_text(" ".join(str(exc).split()) or kind)
            self._end["error.type"] = kind
            status = getattr(exc, "status_code", None)
            if isinstance(status, int):
                self._end["http.response.status_code"] = status
        if self.retries:
            self._end["llm_conductor.retries"] = self.retries
        output = self._output if self._tracer.content else None
        self._each("end", self._clean(self._end), output, error)

    def _each(self, method: str, *args: Any) -> None:
        """``backend.method(handle, *args)`` for every backend whose span started."""
        for backend, handle in zip(self._tracer.backends, self._handles, strict=True):
            if handle is not None:
                _safely(backend, method, handle, *args)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Attributes set when the span ends (e.g. a summary); None values are dropped."""
        self._end.update(attributes)

    def record(self, completion: Completion) -> None:
        """The completion's response attributes: model, id, finish reason, usage, cost."""
        usage = completion.usage
        self._end.update(
            {
                "gen_ai.response.model": completion.model or None,
                "gen_ai.response.id": completion.response_id,
                "gen_ai.response.finish_reasons": [completion.finish_reason or "unknown"],
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.usage.cost": usage.cost,
                "llm_conductor.attempts": completion.attempts,
                "llm_conductor.segments": completion.segments,
            }
        )
        if self._tracer.content:
            self._output = (self._clean_text(completion.text), completion.finish_reason)

    def on_retry(self, error: BaseException, delay: float) -> None:
        """``retry_call``'s ``on_retry``: counts retries and adds a ``retry`` event."""
        self.retries += 1
        attributes = {
            "error.type": type(error).__name__,
            "llm_conductor.retry_delay_s": round(delay, 3),
            "exception.message": self._clean_text(" ".join(str(error).split())),
        }
        self._each("event", "retry", attributes)


def flow_span(name: str, flow_run_id: Any = None, **attributes: Any) -> _Span | _NoSpan:
    """A context manager: the span of one flow run, root of its trace.

    LLM spans opened inside it (in this task or in tasks and coroutines it awaits or starts
    afterwards) are its children; a flow span inside another one is a child too (subflows).
    Attribute names may use ``__`` for dots: ``flow_span("x", prefect__flow__name="y")``.
    """
    tracer = _tracer()
    if not tracer.enabled:
        return NO_SPAN
    attrs: dict[str, Any] = {"llm_conductor.flow": name}
    if flow_run_id is not None:
        attrs["prefect.flow_run.id"] = str(flow_run_id)
    attrs.update({k.replace("__", "."): v for k, v in attributes.items()})
    return _Span(tracer, "flow", name, attrs)


def llm_span(provider: LLMProvider, messages: list[dict[str, str]]) -> _Span | _NoSpan:
    """A context manager: one completion by ``provider`` (retries and continuations included).

    Call ``span.record(completion)`` before leaving it; pass ``span.on_retry`` to the retry
    loop to count retries. An exception leaving the block marks the span as failed.
    """
    tracer = _tracer()
    if not tracer.enabled:
        return NO_SPAN
    model = provider.model_name
    system = _SYSTEMS.get(provider.kind) or (model.split("/", 1)[0] if "/" in model else None)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system or provider.kind,
        "gen_ai.provider.name": system or provider.kind,
        "gen_ai.request.model": model or None,
        "gen_ai.request.temperature": provider.temperature,
        "gen_ai.request.max_tokens": provider.max_tokens,
        "llm_conductor.provider": provider.kind,
        "llm_conductor.reasoning_effort": provider.reasoning_effort,
    }
    if provider.spec.backend == "litellm" and (base := provider.resolved_api_base()):
        parts = urlsplit(base)  # host and port only: never userinfo, path or query
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port
    name = f"chat {model}" if model else f"chat {provider.kind}"
    return _Span(tracer, "llm", name, attributes, messages, secret=provider.resolved_api_key())


# --------------------------------------------------------------------------------------------
# The flow decorator
# --------------------------------------------------------------------------------------------


def _current_flow_span(default_name: str) -> _Span | _NoSpan:
    if not _tracer().enabled:
        return NO_SPAN
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = getattr(context, "flow_run", None)
    flow_name = getattr(getattr(context, "flow", None), "name", None) or default_name
    return flow_span(
        flow_name,
        flow_run_id=getattr(run, "id", None),
        prefect__flow_run__name=getattr(run, "name", None),
        prefect__flow__name=flow_name,
    )


def _wrap_flow_function(fn: F, name: str) -> F:
    if getattr(fn, "__llm_conductor_traced__", False):
        return fn
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError("traced_flow does not support generator flows")
    open_span = functools.partial(_current_flow_span, name)
    if inspect.iscoroutinefunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            with open_span():
                return await fn(*args, **kwargs)

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with open_span():
                return fn(*args, **kwargs)

    # The wrapper only uses closure variables, so it can run with the flow function's module
    # globals: Prefect resolves the parameters' string annotations (``from __future__ import
    # annotations``) in the wrapper's globals.
    rebuilt = types.FunctionType(
        wrapper.__code__, fn.__globals__, fn.__name__, None, wrapper.__closure__
    )
    functools.update_wrapper(rebuilt, fn)
    rebuilt.__llm_conductor_traced__ = True  # type: ignore[attr-defined]
    return rebuilt  # type: ignore[return-value]


def traced_flow(obj: F) -> F:
    """Open a flow span (with the Prefect flow run's id and name) around a flow's body.

    Put it above ``@flow(...)``: the flow keeps its name, parameters and version (Prefect
    hashes the function's file), only the body it runs is wrapped::

        @traced_flow
        @flow(name="Explore a topic")
        async def explore(topic: str, ...) -> ...: ...

    Below ``@flow`` (on the plain function) works too. Off, it costs one check per run.
    """
    fn = getattr(obj, "fn", None)
    if fn is not None and hasattr(obj, "with_options"):  # a prefect Flow
        obj.fn = _wrap_flow_function(fn, getattr(obj, "name", fn.__name__))  # type: ignore[attr-defined]
        return obj
    return _wrap_flow_function(obj, getattr(obj, "__name__", "flow"))
