"""A scriptable LLM HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks the wire formats litellm uses for every provider kind we support, so code under
test goes through litellm's real HTTP path, not a mock:

* OpenAI chat completions: ``POST {root}/v1/chat/completions`` (``openai/``, ``lm_studio/``,
  ``hosted_vllm/``, ``openrouter/`` with ``api_base=server.base_url``);
* Anthropic Messages: ``POST {root}/v1/messages`` (``anthropic/`` with ``api_base=root_url``);
* Gemini: ``POST {api_base}/models/<m>:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (``gemini/`` with ``api_base=server.gemini_url``);
* Ollama: ``POST {root}/api/chat`` (``ollama_chat/``) and ``/api/generate`` (``ollama/``);
* OpenAI embeddings: ``POST {root}/v1/embeddings`` (litellm ``aembedding``), deterministic:
  ``embed`` (text -> vector) when set, else a normalised bag of the text's letter trigrams.

Faults (HTTP errors, hangs, dropped connections, garbage bodies, truncated streams) and
``finish_reason="length"`` rounds are queued from the test thread and consumed by the next
requests. The server is a small asyncio HTTP/1.1 protocol, not an ASGI stack, because "drop" must be
a real abrupt close and benchmarks need thousands of requests per second.

Run as a process for benchmarks (the client then keeps its CPU to itself)::

    python -m tests.support.llm_server --port 0 --latency 0.5   # prints the /v1 base URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "LLMServer",
    "LLMServerProcess",
    "RecordedRequest",
    "ReplyFn",
    "trigram_embedding",
]

ReplyFn = Callable[[dict[str, Any]], str]

#: Non-HTTP-status fault kinds; any 4xx/5xx code ("429", 503, ...) is accepted as well.
FAULT_KINDS = frozenset(
    {"timeout", "empty", "drop", "drop_mid_stream", "stall_mid_stream", "cut_stream", "garbage"}
)

_GARBAGE = b"<html><body>upstream proxy says hello</body></html>"
_MAX_BUFFER = 64 * 1024 * 1024  # refuse absurd requests rather than eat memory


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour, applied to exactly one request."""

    kind: str
    #: "timeout" / "stall_mid_stream": how long to hang; None = until the client gives up.
    seconds: float | None = None
    #: Sent as ``Retry-After`` (and as Gemini's ``RetryInfo``) with HTTP-status faults.
    retry_after: float | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int | None:
        return int(self.kind) if self.kind.isdigit() else None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the server received it (header names are lower-case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    json: Any
    body: bytes
    #: "openai" | "anthropic" | "gemini" | "ollama" | "ollama_generate" | "embeddings"
    api: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["body"] = self.body.decode("utf-8", "replace")
        return data


# --------------------------------------------------------------------------------------------
# Wire formats
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    """The request is malformed in a way the real API would reject with 400."""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _count_tokens(text: str) -> int:
    # Words, not BPE tokens: deterministic, cheap and easy to predict in assertions.
    return len(text.split())


def _text_of(content: Any) -> str:
    """Text of an OpenAI/Anthropic content field: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


@dataclass(slots=True)
class _Call:
    """A parsed completion request, independent of the API it came through."""

    model: str
    messages: list[tuple[str, str]]  # (role, text)
    stream: bool
    include_usage: bool = True
    #: The credential the request carried (Bearer token, x-api-key, ...), for echoing faults.
    api_key: str = ""

    @property
    def last_user_text(self) -> str:
        for role, text in reversed(self.messages):
            if role == "user":
                return text
        return self.messages[-1][1] if self.messages else ""

    @property
    def prompt_tokens(self) -> int:
        return max(1, sum(_count_tokens(text) for _, text in self.messages))


@dataclass(slots=True)
class _Answer:
    content: str
    truncated: bool  # ended by the (simulated) token limit
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def trigram_embedding(text: str, dims: int = 64) -> list[float]:
    """A deterministic unit vector of ``text``'s letter trigrams (spellings that share most
    trigrams point the same way; it knows nothing of meaning)."""
    padded = f"  {text.casefold()} "
    vector = [0.0] * dims
    for i in range(len(padded) - 2):
        digest = hashlib.blake2b(padded[i : i + 3].encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "little") % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _split_words(text: str) -> list[str]:
    # Keep the whitespace with the words so that "".join(pieces) == text.
    return re.findall(r"\S+\s*|\s+", text)


def _pieces(text: str, n: int) -> list[str]:
    """Split ``text`` into at most ``n`` non-empty stream deltas on word boundaries."""
    words = _split_words(text)
    if not words:
        return []
    size = math.ceil(len(words) / max(1, n))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    payload = data if isinstance(data, bytes) else _dumps(data)
    return prefix + b"data: " + payload + b"\n\n"


class _Api:
    """One provider's request/response shapes."""

    name = ""
    stream_content_type = "text/event-stream"

    def parse(self, path: str, query: str, body: Any) -> _Call:
        raise NotImplementedError

    def response(self, call: _Call, answer: _Answer) -> dict[str, Any]:
        raise NotImplementedError

    def stream_frames(self, call: _Call, answer: _Answer, pieces: list[str]) -> list[bytes]:
        raise NotImplementedError

    def error(self, status: int, message: str, fault: Fault | None) -> dict[str, Any]:
        raise NotImplementedError

    def garbage_frame(self) -> bytes:
        return b"data: " + _GARBAGE + b"\n\n"

    def stream_type(self, call: _Call) -> str:
        return self.stream_content_type


def _require_dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return body


def _require_messages(body: dict[str, Any], key: str = "messages") -> list[Any]:
    messages = body.get(key)
    if not isinstance(messages, list) or not messages:
        raise _BadRequest(f"'{key}' must be a non-empty array")
    return messages


class _OpenAI(_Api):
    name = "openai"
    _ERRORS = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    def parse(self, path: str, query: str, body: Any) -> _Call:
        body = _require_dict(body)
        if not isinstance(body.get("model"), str):
            raise _BadRequest("you must provide a model parameter")
        messages = [
            (str(m.get("role", "")), _text_of(m.get("content")))
            for m in _require_messages(body)
            if isinstance(m, dict)
        ]
        options = body.get("stream_options") or {}
        return _Call(
            model=body["model"],
            messages=messages,
            stream=bool(body.get("stream")),
            include_usage=bool(options.get("include_usage")),
        )

    def response(self, call: _Call, answer: _Answer) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "service_tier": "default",  # as OpenAI sends (litellm's groq path reads it)
            "system_fingerprint": "fp_llmserver",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if answer.truncated else "stop",
                }
            ],
            "usage": self._usage(answer),
        }

    @staticmethod
    def _usage(answer: _Answer) -> dict[str, int]:
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.total_tokens,
        }

    def stream_frames(self, call: _Call, answer: _Answer, pieces: list[str]) -> list[bytes]:
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": "fp_llmserver",
        }
        if call.include_usage:
            base["usage"] = None  # as OpenAI does on every chunk but the last

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
        frames += [chunk({"content": piece}) for piece in pieces]
        frames.append(chunk({}, "length" if answer.truncated else "stop"))
        if call.include_usage:
            frames.append(_sse({**base, "choices": [], "usage": self._usage(answer)}))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def error(self, status: int, message: str, fault: Fault | None) -> dict[str, Any]:
        default = ("server_error" if status >= 500 else "invalid_request_error", None)
        kind, code = self._ERRORS.get(status, default)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Anthropic(_Api):
    name = "anthropic"
    _ERRORS = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    def parse(self, path: str, query: str, body: Any) -> _Call:
        body = _require_dict(body)
        if not isinstance(body.get("model"), str):
            raise _BadRequest("model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            raise _BadRequest("max_tokens: Field required")  # the real API insists too
        messages = [("system", _text_of(body["system"]))] if body.get("system") else []
        messages += [
            (str(m.get("role", "")), _text_of(m.get("content")))
            for m in _require_messages(body)
            if isinstance(m, dict)
        ]
        return _Call(model=body["model"], messages=messages, stream=bool(body.get("stream")))

    @staticmethod
    def _stop_reason(answer: _Answer) -> str:
        return "max_tokens" if answer.truncated else "end_turn"

    def response(self, call: _Call, answer: _Answer) -> dict[str, Any]:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": answer.content}],
            "stop_reason": self._stop_reason(answer),
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": answer.completion_tokens,
            },
        }

    def stream_frames(self, call: _Call, answer: _Answer, pieces: list[str]) -> list[bytes]:
        message = {
            **self.response(call, answer),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1},
        }
        frames = [
            _sse({"type": "message_start", "message": message}, "message_start"),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            _sse({"type": "ping"}, "ping"),
        ]
        frames += [
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
                "content_block_delta",
            )
            for piece in pieces
        ]
        frames += [
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop_reason(answer), "stop_sequence": None},
                    "usage": {"output_tokens": answer.completion_tokens},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]
        return frames

    def error(self, status: int, message: str, fault: Fault | None) -> dict[str, Any]:
        kind = self._ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def garbage_frame(self) -> bytes:
        return b"event: content_block_delta\ndata: " + _GARBAGE + b"\n\n"


class _Gemini(_Api):
    name = "gemini"
    _PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
    _STATUS = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    @classmethod
    def matches(cls, path: str) -> bool:
        return cls._PATH.search(path) is not None

    def parse(self, path: str, query: str, body: Any) -> _Call:
        match = self._PATH.search(path)
        assert match is not None  # routed here only on a match
        body = _require_dict(body)
        messages: list[tuple[str, str]] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            messages.append(("system", self._parts_text(system)))
        for content in _require_messages(body, "contents"):
            if isinstance(content, dict):
                role = "assistant" if content.get("role") == "model" else "user"
                messages.append((role, self._parts_text(content)))
        stream = match.group(2) == "streamGenerateContent"
        # include_usage doubles as "SSE framing": without alt=sse Gemini streams one JSON array.
        return _Call(match.group(1), messages, stream, include_usage="alt=sse" in query)

    @staticmethod
    def _parts_text(content: dict[str, Any]) -> str:
        parts = content.get("parts") or []
        return "\n".join(p.get("text", "") for p in parts if isinstance(p, dict))

    def _chunk(self, call: _Call, answer: _Answer, text: str, finish: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = "MAX_TOKENS" if answer.truncated else "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": answer.prompt_tokens,
                "candidatesTokenCount": answer.completion_tokens,
                "totalTokenCount": answer.total_tokens,
            },
            "modelVersion": call.model,
            "responseId": uuid.uuid4().hex[:20],
        }

    def response(self, call: _Call, answer: _Answer) -> dict[str, Any]:
        return self._chunk(call, answer, answer.content, finish=True)

    def stream_frames(self, call: _Call, answer: _Answer, pieces: list[str]) -> list[bytes]:
        pieces = pieces or [""]
        chunks = [
            self._chunk(call, answer, piece, finish=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]
        if call.include_usage:  # alt=sse
            return [b"data: " + _dumps(chunk) + b"\r\n\r\n" for chunk in chunks]
        body = [b"[" + _dumps(chunks[0])]
        body += [b",\r\n" + _dumps(chunk) for chunk in chunks[1:]]
        return [*body, b"]"]

    def stream_type(self, call: _Call) -> str:
        return "text/event-stream" if call.include_usage else "application/json"

    def error(self, status: int, message: str, fault: Fault | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": self._STATUS.get(status, "UNKNOWN"),
        }
        if fault is not None and fault.retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{fault.retry_after:g}s",
                }
            ]
        return {"error": error}


class _Ollama(_Api):
    name = "ollama"
    stream_content_type = "application/x-ndjson"

    def parse(self, path: str, query: str, body: Any) -> _Call:
        body = _require_dict(body)
        if not isinstance(body.get("model"), str):
            raise _BadRequest("model is required")
        messages = [
            (str(m.get("role", "")), _text_of(m.get("content")))
            for m in _require_messages(body)
            if isinstance(m, dict)
        ]
        # Ollama streams unless told otherwise.
        return _Call(model=body["model"], messages=messages, stream=body.get("stream", True))

    def _final(self, call: _Call, answer: _Answer, text: str) -> dict[str, Any]:
        return {
            **self._partial(call, text),
            "done_reason": "length" if answer.truncated else "stop",
            "done": True,
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": answer.prompt_tokens,
            "prompt_eval_duration": 1_000,
            "eval_count": answer.completion_tokens,
            "eval_duration": 1_000,
        }

    def _partial(self, call: _Call, text: str) -> dict[str, Any]:
        return {
            "model": call.model,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "message": {"role": "assistant", "content": text},
            "done": False,
        }

    def response(self, call: _Call, answer: _Answer) -> dict[str, Any]:
        return self._final(call, answer, answer.content)

    def stream_frames(self, call: _Call, answer: _Answer, pieces: list[str]) -> list[bytes]:
        frames = [_dumps(self._partial(call, piece)) + b"\n" for piece in pieces]
        return [*frames, _dumps(self._final(call, answer, "")) + b"\n"]

    def error(self, status: int, message: str, fault: Fault | None) -> dict[str, Any]:
        return {"error": message}

    def garbage_frame(self) -> bytes:
        return _GARBAGE + b"\n"


class _OllamaGenerate(_Ollama):
    """``/api/generate`` (litellm ``ollama/``): one prompt string, answer in ``response``."""

    name = "ollama_generate"

    def parse(self, path: str, query: str, body: Any) -> _Call:
        body = _require_dict(body)
        if not isinstance(body.get("model"), str):
            raise _BadRequest("model is required")
        messages = [("system", str(body["system"]))] if body.get("system") else []
        messages.append(("user", str(body.get("prompt", ""))))
        return _Call(model=body["model"], messages=messages, stream=body.get("stream", True))

    def _partial(self, call: _Call, text: str) -> dict[str, Any]:
        return {
            "model": call.model,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "response": text,
            "done": False,
        }


_OPENAI, _ANTHROPIC, _GEMINI = _OpenAI(), _Anthropic(), _Gemini()
_OLLAMA, _OLLAMA_GENERATE = _Ollama(), _OllamaGenerate()


def _route(path: str) -> _Api | None:
    if path.endswith("/chat/completions"):
        return _OPENAI
    if path in ("/v1/messages", "/messages"):
        return _ANTHROPIC
    if path == "/api/chat":
        return _OLLAMA
    if path == "/api/generate":
        return _OLLAMA_GENERATE
    if _Gemini.matches(path):
        return _GEMINI
    return None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"  # 529: Anthropic's own code


def _default_error_message(status: int) -> str:
    # litellm maps an OpenAI-style 401 to AuthenticationError only when the message says
    # "Incorrect API key provided" (otherwise to BadRequestError): use the real wording.
    phrase = {401: "Incorrect API key provided: dummy", 429: "Rate limit reached"}.get(status)
    return f"{phrase or _reason(status)} (injected by LLMServer)"


def _credential(headers: Mapping[str, str], query: str) -> str:
    bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
    key = re.search(r"(?:^|&)key=([^&]*)", query)
    return (
        bearer
        or headers.get("x-api-key", "")
        or headers.get("x-goog-api-key", "")
        or (key.group(1) if key else "")
    )


def _make_fault(
    kind: str | int,
    *,
    seconds: float | None = None,
    retry_after: float | None = None,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fault:
    kind = str(kind)
    if kind not in FAULT_KINDS and not (kind.isdigit() and 400 <= int(kind) <= 599):
        raise ValueError(
            f"unknown fault {kind!r}: use an HTTP status 400-599 or one of {sorted(FAULT_KINDS)}"
        )
    return Fault(kind, seconds, retry_after, message, dict(headers or {}))


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed the connection while we were still working on its request."""


class _BadHttp(Exception):
    """A request we cannot parse; answered with ``status`` and a closed connection."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection.

    Hand-written rather than h11 (which cost ~70% of the server's CPU): the clients are
    httpx and aiohttp, so Content-Length and chunked bodies, keep-alive and pipelining are
    all we need. A protocol (not streams) lets a sleeping handler notice the client leaving.
    """

    def __init__(self, server: LLMServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self.gone: asyncio.Future[None] = self._loop.create_future()
        self.transport: asyncio.Transport | None = None

    # ---- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small SSE frames
        self._server._track(self._loop.create_task(self._run()))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        # HTTP clients do not half-close while waiting for an answer: EOF means gone.
        self._set_gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_gone()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _set_gone(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---- reading --------------------------------------------------------------------------

    async def _more(self) -> None:
        if self.gone.done():
            raise _ClientGone
        if len(self._buffer) > _MAX_BUFFER:
            raise _BadHttp(413)
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _read_until(self, separator: bytes) -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            await self._more()
        data = bytes(self._buffer[:end])
        del self._buffer[: end + len(separator)]
        return data

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._more()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _read_request(self) -> _Request | None:
        while self._buffer.startswith(b"\r\n"):  # tolerated between pipelined requests
            del self._buffer[:2]
        try:
            head = await self._read_until(b"\r\n\r\n")
        except _ClientGone:
            if self._buffer.strip():
                raise _BadHttp(400) from None
            return None  # a clean close between requests
        request_line, *lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = request_line.split(" ")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            connection = headers.get("connection", "").lower()
            keep_alive = "close" not in connection and (
                version == "HTTP/1.1" or "keep-alive" in connection
            )
            if headers.get("expect", "").lower() == "100-continue":
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl sends this
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = await self._read_chunked()
            else:
                body = await self._read_exactly(int(headers.get("content-length", 0)))
        except ValueError:
            raise _BadHttp(400) from None
        return _Request(method, target, headers, body, keep_alive)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while size := int((await self._read_until(b"\r\n")).split(b";")[0], 16):
            body += await self._read_exactly(size + 2)
            del body[-2:]
        while await self._read_until(b"\r\n"):  # trailers, up to the empty line
            pass
        return bytes(body)

    # ---- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            raise _ClientGone
        self.transport.write(data)

    async def drain(self) -> None:
        if self._writing_paused and not self.gone.done():
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter
        if self.gone.done():
            raise _ClientGone

    def abort(self) -> None:
        assert self.transport is not None
        self.transport.abort()

    # ---- the request loop -----------------------------------------------------------------

    async def _run(self) -> None:
        assert self.transport is not None
        try:
            while (request := await self._read_request()) is not None:
                exchange = _Exchange(self, request.keep_alive)
                try:
                    await self._server._dispatch(exchange, request)
                except (_ClientGone, asyncio.CancelledError):
                    raise
                except Exception as exc:  # a bug in here must show, not hang the client
                    print(f"LLMServer: internal error: {exc!r}", file=sys.stderr)
                    if exchange.head_sent:
                        raise _ClientGone from exc  # nothing sensible left to send
                    body = _dumps({"error": {"message": repr(exc), "type": "server_error"}})
                    await exchange.respond(500, body, "application/json")
                if not request.keep_alive:
                    break
        except _BadHttp as exc:
            body = _dumps({"error": {"message": _reason(exc.status), "type": "invalid_request"}})
            with contextlib.suppress(_ClientGone):
                await _Exchange(self, keep_alive=False).respond(
                    exc.status, body, "application/json"
                )
        except (_ClientGone, asyncio.CancelledError):
            pass
        finally:
            self.transport.close()  # flushes what is buffered; "drop" aborted already


class _Exchange:
    """Writes one response: fixed-length, or chunked when no content-length is given.

    Output is collected and sent by ``flush()``: a stream without delays then costs one
    syscall instead of one per event, while the client still parses separate events.
    """

    __slots__ = ("conn", "keep_alive", "head_sent", "chunked", "_pending")

    def __init__(self, conn: _Connection, keep_alive: bool) -> None:
        self.conn, self.keep_alive = conn, keep_alive
        self.head_sent = self.chunked = False
        self._pending: list[bytes] = []

    async def pause(self, seconds: float | None) -> None:
        """Sleep, but stop as soon as the client hangs up (``None``: until it does)."""
        if seconds is not None and seconds <= 0:
            return
        done, _ = await asyncio.wait([self.conn.gone], timeout=seconds)
        if done:
            raise _ClientGone

    def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.chunked = not any(line.startswith("content-length:") for line in lines)
        if self.chunked:
            lines.append("transfer-encoding: chunked")
        if not self.keep_alive:
            lines.append("connection: close")
        self._pending.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.head_sent = True

    def add(self, data: bytes) -> None:
        if data:
            self._pending.append(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)

    async def flush(self) -> None:
        if self._pending:
            self.conn.write(b"".join(self._pending))
            self._pending.clear()
        await self.conn.drain()

    async def finish(self) -> None:
        if self.chunked:
            self._pending.append(b"0\r\n\r\n")
        await self.flush()

    async def respond(
        self, status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.start(
            status, [("content-type", content_type), ("content-length", str(len(body))), *extra]
        )
        self.add(body)
        await self.finish()

    def abort(self) -> None:
        self.conn.abort()


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class LLMServer:
    """A fake LLM API server running on its own event loop in a background thread.

    Attributes the tests may set at any time from any thread: ``reply``, ``latency``,
    ``jitter``, ``stream_delay``, ``stream_chunks``, ``length_rounds``,
    ``hold_until_in_flight``.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        reply: str | ReplyFn | None = None,
        stream_delay: float = 0.0,
        stream_chunks: int = 4,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        #: Text of every answer; a callable gets the request JSON; None echoes the prompt.
        self.reply: str | ReplyFn | None = reply
        #: Seconds before each answer, plus a uniform random ``[0, jitter)``.
        self.latency = latency
        self.jitter = jitter
        #: Seconds between stream chunks; how many content deltas a stream has at most.
        self.stream_delay = stream_delay
        self.stream_chunks = stream_chunks
        #: Keep ``requests``; switch off for long benchmarks to bound memory.
        self.record = record
        #: ``/v1/embeddings``: text -> vector; None = ``trigram_embedding``.
        self.embed: Callable[[str], list[float]] | None = None
        #: Cut an answer longer than the request's ``max_tokens`` (in words) there, with a
        #: length finish reason, as a real server does.
        self.honour_max_tokens = False
        #: False: OpenAI streams carry no usage even when asked (llama.cpp-style servers).
        self.stream_usage = True
        #: N > 0: the first answers wait (up to 30 s) until N requests are in flight at once,
        #: so a test of a parallelism bound sees it reached however slowly the client starts
        #: its requests; after that (reached or not), answers flow as usual. ``reset()``
        #: re-arms it.
        self.hold_until_in_flight = 0
        self._held_enough = False
        self._settings = {
            "reply": reply,
            "latency": latency,
            "jitter": jitter,
            "stream_delay": stream_delay,
            "stream_chunks": stream_chunks,
        }
        self.host, self._port = host, port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._length_rounds = 0
        self._requests: list[RecordedRequest] = []
        self._request_count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # ---- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("LLMServer is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: api_base for ``anthropic/``, ``ollama*/``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: OpenAI-style api_base."""
        return f"{self.root_url}/v1"

    @property
    def gemini_url(self) -> str:
        """``http://127.0.0.1:PORT/v1beta``: api_base for ``gemini/`` (any prefix works)."""
        return f"{self.root_url}/v1beta"

    # ---- scripting (thread-safe) ----------------------------------------------------------

    @property
    def length_rounds(self) -> int:
        """How many of the next completions end with a length finish reason."""
        with self._lock:
            return self._length_rounds

    @length_rounds.setter
    def length_rounds(self, value: int) -> None:
        with self._lock:
            self._length_rounds = max(0, int(value))

    def enqueue(
        self,
        kind: str | int,
        *,
        seconds: float | None = None,
        retry_after: float | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` API requests misbehave (after any already queued).

        ``kind``: an HTTP status 400-599 (error body in the API's own shape, ``Retry-After``
        from ``retry_after``); "timeout" (answer after ``seconds``, None = never);
        "empty" (content ""); "drop" (close without a response); "drop_mid_stream" (close
        after part of the body/stream); "stall_mid_stream" (pause ``seconds`` halfway);
        "cut_stream" (a stream that ends cleanly halfway: no finish reason, no usage, no
        ``[DONE]``); "garbage" (200 with a non-JSON body or stream event).
        ``{api_key}`` in ``message`` becomes the credential the request carried, as servers
        that echo the key in their error body do.
        """
        fault = _make_fault(
            kind, seconds=seconds, retry_after=retry_after, message=message, headers=headers
        )
        with self._lock:
            self._faults.extend([fault] * times)

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the API requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """API requests received (counted even when ``record`` is off)."""
        with self._lock:
            return self._request_count

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Most API requests handled at the same time since start or ``reset()``."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget requests, faults, length rounds and counters; restore the settings
        (``reply``, ``latency``, ...) given to the constructor."""
        with self._lock:
            self._faults.clear()
            self._length_rounds = 0
            self._requests.clear()
            self._request_count = 0
            self._max_in_flight = self._in_flight
            self._held_enough = False
        self.hold_until_in_flight = 0
        self.embed = None
        self.honour_max_tokens = False
        self.stream_usage = True
        for name, value in self._settings.items():
            setattr(self, name, value)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self._request_count,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "pending_faults": len(self._faults),
                "length_rounds": self._length_rounds,
            }

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("LLMServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # surfaced to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"LLMServer:{self._port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self._port, backlog=1024
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        # Hanging "timeout" handlers must not keep the test waiting.
        await asyncio.gather(*self._connections, return_exceptions=True)
        await asyncio.sleep(0)  # let the transports' close callbacks run before loop.close()

    # ---- connections ----------------------------------------------------------------------

    def _track(self, task: asyncio.Task[None]) -> None:
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _dispatch(self, ex: _Exchange, request: _Request) -> None:
        method, raw = request.method, request.body
        path, _, query = request.target.partition("?")
        if path.startswith("/_admin/"):
            await self._admin(ex, method, path, raw)
            return
        if method == "POST" and path in ("/v1/embeddings", "/embeddings"):
            await self._embeddings(ex, request)
            return
        api = _route(path)
        if api is None:
            if method == "GET" and path in ("/health", "/v1/models", "/models", "/api/tags"):
                await self._simple_get(ex, path)
                return
            error = _OPENAI.error(404, f"Unknown request URL: {method} {path}.", None)
            await ex.respond(404, _dumps(error), "application/json")
            return
        if method != "POST":
            error = api.error(405, f"Method {method} not allowed.", None)
            await ex.respond(405, _dumps(error), "application/json", [("allow", "POST")])
            return

        try:
            data: Any = json.loads(raw) if raw else None
        except ValueError:
            data = None
        call: _Call | None = None
        bad_request = ""
        try:
            call = api.parse(path, query, data)
        except _BadRequest as exc:
            bad_request = str(exc)
        if call is not None:
            call.api_key = _credential(request.headers, query)
            if not self.stream_usage and api is _OPENAI:
                call.include_usage = False
        with self._lock:
            self._request_count += 1
            if self.record:
                self._requests.append(
                    RecordedRequest(method, path, query, request.headers, data, raw, api.name)
                )
            # A malformed request is our caller's bug: it must not use up a scripted fault.
            fault = self._faults.popleft() if self._faults and call is not None else None
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            hold = self.hold_until_in_flight
            self._held_enough = self._held_enough or self._in_flight >= hold
        try:
            deadline = time.monotonic() + 30
            while not self._held_enough and time.monotonic() < deadline:
                await ex.pause(0.01)
            self._held_enough = True  # reached or given up on: the hold is over for all
            delay = self.latency + (self._rng.uniform(0, self.jitter) if self.jitter > 0 else 0)
            await ex.pause(delay)
            if call is None:
                await self._send_error(ex, api, 400, bad_request, None)
            else:
                await self._complete(ex, api, call, data, fault)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _complete(
        self, ex: _Exchange, api: _Api, call: _Call, data: Any, fault: Fault | None
    ) -> None:
        kind = fault.kind if fault else None
        if kind == "drop":
            ex.abort()
            raise _ClientGone
        if fault is not None and fault.status is not None:
            message = fault.message or _default_error_message(fault.status)
            message = message.replace("{api_key}", call.api_key)
            await self._send_error(ex, api, fault.status, message, fault)
            return
        if kind == "garbage":
            if call.stream:
                ex.start(200, [("content-type", api.stream_type(call))])
                ex.add(api.garbage_frame())
                await ex.finish()
            else:
                await ex.respond(200, _GARBAGE, "application/json")
            return
        if fault is not None and kind == "timeout":
            await ex.pause(fault.seconds)

        if kind == "empty":
            content, truncated = "", False
        else:
            # A dropped stream is not a completion: keep the length round for the retry.
            truncated = kind not in ("drop_mid_stream", "cut_stream") and self._take_length_round()
            content = self._answer_text(call, data)
            limit = data.get("max_tokens") if self.honour_max_tokens else None
            if not truncated and isinstance(limit, int) and _count_tokens(content) > limit:
                words = [w for w in _split_words(content) if w.strip()]
                content, truncated = "".join(words[:limit]).rstrip(), True
            elif truncated:
                words = _split_words(content)
                content = "".join(words[: max(1, math.ceil(len(words) / 2))]).rstrip()
        answer = _Answer(content, truncated, call.prompt_tokens, _count_tokens(content))

        if call.stream:
            frames = api.stream_frames(call, answer, _pieces(content, self.stream_chunks))
            ex.start(200, [("content-type", api.stream_type(call)), ("cache-control", "no-cache")])
        else:
            body = _dumps(api.response(call, answer))
            # Split one body in two so the mid-stream faults apply to plain responses too.
            frames = [body[: len(body) // 2], body[len(body) // 2 :]]
            ex.start(
                200, [("content-type", "application/json"), ("content-length", str(len(body)))]
            )

        halfway = max(1, len(frames) // 2)
        for index, frame in enumerate(frames):
            if index == halfway and kind == "cut_stream" and call.stream:
                break  # a clean end of the response, as a proxy that gives up might send
            if index == halfway and kind in ("drop_mid_stream", "cut_stream"):
                await ex.flush()
                ex.abort()
                raise _ClientGone
            if index == halfway and fault is not None and kind == "stall_mid_stream":
                await ex.flush()
                await ex.pause(fault.seconds)
            elif index and call.stream and self.stream_delay > 0:
                await ex.flush()
                await ex.pause(self.stream_delay)
            ex.add(frame)
        await ex.finish()

    async def _embeddings(self, ex: _Exchange, request: _Request) -> None:
        """OpenAI's embeddings API: ``{"model", "input": str | [str]}`` -> one vector each."""
        try:
            data = json.loads(request.body)
            texts = data["input"]
            texts = [texts] if isinstance(texts, str) else list(texts)
            if not texts or not all(isinstance(t, str) for t in texts):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            error = _OPENAI.error(400, "'input' must be a string or a list of strings", None)
            await ex.respond(400, _dumps(error), "application/json")
            return
        with self._lock:
            self._request_count += 1
            if self.record:
                recorded = RecordedRequest(
                    "POST", request.target, "", request.headers, data, request.body, "embeddings"
                )
                self._requests.append(recorded)
        embed = self.embed or trigram_embedding
        tokens = sum(_count_tokens(t) for t in texts)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": embed(t)}
                for i, t in enumerate(texts)
            ],
            "model": data.get("model", "fake-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await ex.respond(200, _dumps(body), "application/json")

    def _answer_text(self, call: _Call, data: Any) -> str:
        reply = self.reply
        if reply is None:
            return f"echo: {call.last_user_text}"
        if isinstance(reply, str):
            return reply
        return str(reply(data))

    def _take_length_round(self) -> bool:
        with self._lock:
            if self._length_rounds > 0:
                self._length_rounds -= 1
                return True
            return False

    async def _send_error(
        self, ex: _Exchange, api: _Api, status: int, message: str, fault: Fault | None
    ) -> None:
        extra = dict(fault.headers) if fault else {}
        if fault is not None and fault.retry_after is not None:
            extra.setdefault("retry-after", f"{fault.retry_after:g}")
        body = _dumps(api.error(status, message, fault))
        await ex.respond(status, body, "application/json", extra.items())

    async def _simple_get(self, ex: _Exchange, path: str) -> None:
        if path == "/health":
            payload: Any = {"status": "ok"}
        elif path == "/api/tags":
            payload = {"models": [{"name": "fake:latest", "model": "fake:latest"}]}
        else:
            payload = {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "llm"}],
            }
        await ex.respond(200, _dumps(payload), "application/json")

    async def _admin(self, ex: _Exchange, method: str, path: str, raw: bytes) -> None:
        """Remote control for a server in another process (see ``LLMServerProcess``)."""
        try:
            args = json.loads(raw) if raw else {}
            if path == "/_admin/stats":
                result: Any = self.stats()
            elif path == "/_admin/requests":
                result = [r.to_dict() for r in self.requests]
            elif path == "/_admin/reset" and method == "POST":
                self.reset()
                result = {"ok": True}
            elif path == "/_admin/config" and method == "POST":
                for key in (
                    "reply",
                    "latency",
                    "jitter",
                    "stream_delay",
                    "stream_chunks",
                    "hold_until_in_flight",
                    "stream_usage",
                ):
                    if key in args:
                        setattr(self, key, args[key])
                if "length_rounds" in args:
                    self.length_rounds = args["length_rounds"]
                result = {"ok": True}
            elif path == "/_admin/enqueue" and method == "POST":
                self.enqueue(args.pop("kind"), **args)
                result = {"ok": True}
            else:
                await ex.respond(404, _dumps({"error": "unknown admin call"}), "application/json")
                return
        except (ValueError, TypeError, KeyError) as exc:
            await ex.respond(400, _dumps({"error": repr(exc)}), "application/json")
            return
        await ex.respond(200, _dumps(result), "application/json")


# --------------------------------------------------------------------------------------------
# The server in its own process (benchmarks)
# --------------------------------------------------------------------------------------------

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class LLMServerProcess:
    """Run ``LLMServer`` in a child process, so it does not share the client's CPU and GIL.

    Scripting goes through the ``/_admin/*`` endpoints; ``reply`` can only be a string here.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        reply: str | None = None,
        stream_delay: float = 0.0,
        record: bool = False,
        port: int = 0,
        startup_timeout: float = 15.0,
    ) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "tests.support.llm_server",
            f"--port={port}",
            f"--latency={latency}",
            f"--jitter={jitter}",
            f"--stream-delay={stream_delay}",
            *(["--reply", reply] if reply is not None else []),
            *([] if record else ["--no-record"]),
        ]
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        # Plain urllib without proxies: the environment may set http_proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def gemini_url(self) -> str:
        return f"{self.root_url}/v1beta"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("LLMServerProcess is not started")
        return self._proc.pid

    def start(self) -> Self:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self._proc = subprocess.Popen(
            self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], self._startup_timeout)
        line = self._proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"LLM server process did not start: {line!r}")
        self.base_url = line
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else _dumps(payload)
        request = urllib.request.Request(
            f"{self.root_url}/_admin/{path}",
            data=data,
            method="GET" if data is None else "POST",
            headers={"content-type": "application/json"},
        )
        with self._opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self._call("stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """Recorded requests as dicts (only when started with ``record=True``)."""
        result: list[dict[str, Any]] = self._call("requests")
        return result

    def reset(self) -> None:
        self._call("reset", {})

    def configure(self, **settings: Any) -> None:
        """Set ``reply`` (str), ``latency``, ``jitter``, ``stream_delay``, ``length_rounds``."""
        self._call("config", settings)

    def enqueue(self, kind: str | int, **options: Any) -> None:
        _make_fault(kind, **{k: v for k, v in options.items() if k != "times"})  # fail here
        self._call("enqueue", {"kind": str(kind), **options})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Fake LLM API server (OpenAI, Anthropic, Gemini, Ollama)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--stream-delay", type=float, default=0.0)
    parser.add_argument("--reply", default=None, help="fixed answer text (default: echo)")
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LLMServer(
        host=args.host,
        port=args.port,
        latency=args.latency,
        jitter=args.jitter,
        stream_delay=args.stream_delay,
        reply=args.reply,
        record=args.record,
    ) as server:
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
