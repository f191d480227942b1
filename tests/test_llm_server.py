"""The fake LLM server, checked over real HTTP with httpx and with litellm itself.

The ``llm_server`` fixture comes from ``tests/support/fixtures.py`` via ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

import httpx
import openai
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing litellm
import litellm  # noqa: E402

from tests.support.llm_server import LLMServer, LLMServerProcess  # noqa: E402

litellm.suppress_debug_info = True

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there world"},
]
# (litellm model, which server URL is its api_base, path litellm calls, server's api name)
PROVIDERS = [
    ("openai/gpt-test", "base_url", "/v1/chat/completions", "openai"),
    ("hosted_vllm/m", "base_url", "/v1/chat/completions", "openai"),
    ("anthropic/claude-test", "root_url", "/v1/messages", "anthropic"),
    # gemini-2.5: litellm knows it takes a system instruction (older names get it merged).
    ("gemini/gemini-2.5-flash", "gemini_url", "/v1beta/models/gemini-2.5-flash:", "gemini"),
    ("ollama_chat/llama3", "root_url", "/api/chat", "ollama"),
]
PROVIDER_IDS = [p[0].split("/")[0] for p in PROVIDERS]
# One event loop for the module's async tests: litellm caches HTTP clients across calls.
module_loop = pytest.mark.asyncio(loop_scope="module")


async def settled(server: LLMServer, seconds: float = 30) -> None:
    """Wait until the server has no request in flight (it may still be finishing one)."""
    deadline = time.monotonic() + seconds
    while server.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def complete(server: LLMServer, model: str, url_attr: str, **kwargs: Any) -> Any:
    stream = kwargs.pop("stream", False)
    options = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    response = await litellm.acompletion(
        model=model,
        api_base=getattr(server, url_attr),
        api_key="dummy",
        max_retries=0,
        timeout=kwargs.pop("timeout", 5),
        messages=kwargs.pop("messages", MESSAGES),
        **options,
        **kwargs,
    )
    if not stream:
        return response
    chunks = [chunk async for chunk in response]
    return litellm.stream_chunk_builder(chunks, messages=MESSAGES)


# ---- every provider kind through litellm ---------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("model", "url_attr", "path", "api"), PROVIDERS, ids=PROVIDER_IDS)
@module_loop
async def test_litellm_roundtrip(
    llm_server: LLMServer, model: str, url_attr: str, path: str, api: str, stream: bool
) -> None:
    response = await complete(llm_server, model, url_attr, stream=stream)

    assert response.choices[0].message.content == "echo: hello there world"
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 4)
    (request,) = llm_server.requests
    assert request.api == api and request.path.startswith(path)
    assert "be brief" in json.dumps(request.json)  # the system prompt arrived


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("model", "url_attr", "path", "api"), PROVIDERS, ids=PROVIDER_IDS)
@module_loop
async def test_length_rounds_then_stop(
    llm_server: LLMServer, model: str, url_attr: str, path: str, api: str, stream: bool
) -> None:
    llm_server.reply = "one two three four"
    llm_server.length_rounds = 1

    first = await complete(llm_server, model, url_attr, stream=stream)
    second = await complete(llm_server, model, url_attr, stream=stream)

    assert (first.choices[0].finish_reason, first.choices[0].message.content) == (
        "length",
        "one two",
    )
    assert first.usage.completion_tokens == 2
    assert (second.choices[0].finish_reason, second.choices[0].message.content) == (
        "stop",
        "one two three four",
    )
    assert llm_server.length_rounds == 0


@module_loop
async def test_ollama_generate_endpoint(llm_server: LLMServer) -> None:
    llm_server.reply = "fixed"
    response = await complete(llm_server, "ollama/llama3", "root_url")
    assert response.choices[0].message.content == "fixed"
    assert llm_server.requests[0].path == "/api/generate"


@module_loop
async def test_reply_callable_gets_request_json(llm_server: LLMServer) -> None:
    llm_server.reply = lambda body: f"model={body['model']}"
    response = await complete(llm_server, "openai/gpt-test", "base_url")
    assert response.choices[0].message.content == "model=gpt-test"


# ---- faults through litellm ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        ("429", litellm.exceptions.RateLimitError),
        ("500", litellm.exceptions.InternalServerError),
        ("401", litellm.exceptions.AuthenticationError),
        ("400", litellm.exceptions.BadRequestError),
    ],
)
@pytest.mark.parametrize(("model", "url_attr", "path", "api"), PROVIDERS, ids=PROVIDER_IDS)
@module_loop
async def test_http_error_faults(
    llm_server: LLMServer,
    model: str,
    url_attr: str,
    path: str,
    api: str,
    status: str,
    exception: type[Exception],
) -> None:
    llm_server.enqueue(status, retry_after=2)
    with pytest.raises(exception) as caught:
        await complete(llm_server, model, url_attr)
    assert getattr(caught.value, "status_code", None) == int(status)
    if status == "429":
        headers = getattr(caught.value, "litellm_response_headers", None)
        assert headers is not None and headers.get("retry-after") == "2"
    # The fault was used up: the next call succeeds.
    assert (await complete(llm_server, model, url_attr)).choices[0].message.content


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", ["drop", "drop_mid_stream", "garbage"])
@module_loop
async def test_connection_faults_raise(llm_server: LLMServer, kind: str, stream: bool) -> None:
    llm_server.enqueue(kind)
    with pytest.raises(openai.APIError) as caught:  # the common base of litellm's errors
        await complete(llm_server, "openai/gpt-test", "base_url", stream=stream)
    assert getattr(caught.value, "status_code", None) == 500


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@module_loop
async def test_timeout_fault(llm_server: LLMServer, stream: bool) -> None:
    llm_server.enqueue("timeout", seconds=60)
    started = time.monotonic()
    with pytest.raises(litellm.exceptions.Timeout):
        await complete(llm_server, "openai/gpt-test", "base_url", stream=stream, timeout=0.3)
    assert time.monotonic() - started < 30, "the client waited for the server, not its timeout"
    # The server noticed the client leaving and stopped working on the request.
    await settled(llm_server)
    assert llm_server.in_flight == 0


@pytest.mark.parametrize(("model", "url_attr", "path", "api"), PROVIDERS[2:], ids=PROVIDER_IDS[2:])
@module_loop
async def test_stream_cut_midway(
    llm_server: LLMServer, model: str, url_attr: str, path: str, api: str
) -> None:
    llm_server.enqueue("drop_mid_stream")
    with pytest.raises(openai.APIError):
        await complete(llm_server, model, url_attr, stream=True)


@module_loop
async def test_stall_mid_stream_and_stream_delay(llm_server: LLMServer) -> None:
    llm_server.enqueue("stall_mid_stream", seconds=5)
    with pytest.raises(openai.APIError):  # litellm's read timeout fires mid-stream
        await complete(llm_server, "openai/gpt-test", "base_url", stream=True, timeout=0.3)

    llm_server.stream_delay = 0.05
    body = {"model": "m", "messages": [{"role": "user", "content": "a b c d e f"}], "stream": True}
    arrivals = []
    started = time.monotonic()
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", f"{llm_server.base_url}/chat/completions", json=body) as response,
    ):
        async for _ in response.aiter_lines():
            arrivals.append(time.monotonic() - started)
    # Seven frames (role, four deltas, finish, [DONE]) with six 50 ms gaps between them: the
    # last cannot arrive before 0.3 s (when the first arrived depends on the client's pace).
    assert arrivals[-1] >= 0.3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@module_loop
async def test_empty_fault(llm_server: LLMServer, stream: bool) -> None:
    llm_server.enqueue("empty")
    response = await complete(llm_server, "openai/gpt-test", "base_url", stream=stream)
    assert response.choices[0].message.content in ("", None)
    assert response.choices[0].finish_reason == "stop"


@module_loop
async def test_faults_apply_in_order(llm_server: LLMServer) -> None:
    llm_server.enqueue("500")
    llm_server.enqueue("429", times=2)
    statuses = []
    for _ in range(4):
        try:
            await complete(llm_server, "openai/gpt-test", "base_url")
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    assert statuses == [500, 429, 429, 200]


# ---- the HTTP layer, without litellm -------------------------------------------------------


@module_loop
async def test_raw_stream_format(llm_server: LLMServer) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "a b c d e f g h"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{llm_server.base_url}/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    events = [line[6:] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert len([d for d in deltas if d]) >= 3
    assert "".join(d or "" for d in deltas) == "echo: a b c d e f g h"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 9, "total_tokens": 17}


@module_loop
async def test_keep_alive_chunked_bodies_and_errors(llm_server: LLMServer) -> None:
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})

    async def chunked() -> Any:  # no content-length: httpx sends a chunked request body
        yield payload[:10].encode()
        yield payload[10:].encode()

    async with httpx.AsyncClient(base_url=llm_server.root_url) as client:
        first = await client.post("/v1/chat/completions", content=chunked())
        llm_server.enqueue("500")
        invalid = await client.post("/v1/chat/completions", content=b"{not json")
        missing = await client.get("/nowhere")
        health = await client.get("/health")
        second = await client.post("/chat/completions", content=payload)
    assert first.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert invalid.status_code == 400 and "error" in invalid.json()
    assert missing.status_code == 404 and health.json() == {"status": "ok"}
    assert second.status_code == 500  # the malformed request did not use up the fault
    assert first.headers.get("connection") != "close"


def test_drop_closes_without_response(llm_server: LLMServer) -> None:
    llm_server.enqueue("drop")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.create_connection(("127.0.0.1", llm_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(body), body)
        )
        assert sock.recv(1024) == b""  # closed, not a single byte of response


@module_loop
async def test_latency_and_max_in_flight(llm_server: LLMServer) -> None:
    llm_server.latency = 0.2
    llm_server.hold_until_in_flight = 10  # all ten at once, however slowly the client sends
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=llm_server.base_url) as client:
        responses = await asyncio.gather(
            *(client.post("/chat/completions", json=body) for _ in range(10))
        )
    elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert elapsed >= 0.2
    assert llm_server.max_in_flight == 10 and llm_server.request_count == 10
    await settled(llm_server)  # the server's count drops just after its last byte is sent
    llm_server.reset()
    assert (llm_server.latency, llm_server.max_in_flight, llm_server.requests) == (0.0, 0, [])
    assert llm_server.hold_until_in_flight == 0


def test_enqueue_rejects_unknown_fault(llm_server: LLMServer) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        llm_server.enqueue("explode")


# ---- the server in its own process ---------------------------------------------------------


def test_server_process() -> None:
    with LLMServerProcess(reply="from the process") as server:
        assert server.base_url.endswith("/v1")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        url = f"{server.base_url}/chat/completions"
        with httpx.Client() as client:
            ok = client.post(url, json=body)
            server.enqueue("429", retry_after=1)
            server.configure(length_rounds=1)
            limited = client.post(url, json=body)
            truncated = client.post(url, json=body)
        assert ok.json()["choices"][0]["message"]["content"] == "from the process"
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert truncated.json()["choices"][0]["finish_reason"] == "length"
        assert server.stats()["requests"] == 3
        pid = server.pid
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)
