"""Running the claude and codex executables: no shell, prompt on stdin, hard timeout, and an
environment that holds only what the tool needs (``child_env``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blocks.errors import CliProviderError, ProviderError, ProviderTimeout, UsageError
from blocks.providers.base import Message

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["BASE_ENV", "CliOutput", "LineWatcher", "child_env", "flatten_messages", "run_cli"]

_INSTALL_HINT = {
    "claude": "npm install -g @anthropic-ai/claude-code, then run `claude` once to log in",
    "codex": "npm install -g @openai/codex, then `codex login`",
}

#: Passed to both tools: finding programs and the home folder, locale, temporary files,
#: proxies and certificates. Anything else (other providers' keys above all) stays out.
BASE_ENV: frozenset[str] = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE",
        "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    }
)  # fmt: skip
_BASE_PREFIXES = ("LC_",)

#: A watcher sees each stdout line as it arrives; an error it returns ends the run at once.
LineWatcher = Callable[[str], ProviderError | None]


@dataclass(frozen=True)
class CliOutput:
    stdout: str
    stderr: str
    returncode: int

    def stderr_tail(self, lines: int = 5, *, skip: Callable[[str], bool] | None = None) -> str:
        kept = [line for line in self.stderr.strip().splitlines() if not (skip and skip(line))]
        return " | ".join(kept[-lines:])


def flatten_messages(messages: list[Message]) -> str:
    """CLI tools take one prompt: a continuation is written out as a transcript."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def executable(provider: LLMProvider) -> str:
    name = str(provider.options.get("executable") or provider.spec.executable)
    path = shutil.which(name)
    if path is None:
        hint = _INSTALL_HINT.get(os.path.basename(name), "install it")
        raise CliProviderError(
            f"`{name}` not found on PATH ({hint})", provider=provider.kind, exit_code=None
        )
    return path


def child_env(
    provider: LLMProvider,
    *,
    names: Iterable[str] = (),
    prefixes: tuple[str, ...] = (),
    defaults: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The allow-listed environment for a tool: ``BASE_ENV``, the tool's own ``names`` and
    ``prefixes``, and the block's ``options["pass_env"]`` (names a user adds, e.g. for
    Bedrock); ``defaults`` fill in what the user did not set. Never written into
    ``os.environ``."""
    environ = os.environ if environ is None else environ
    extra = provider.options.get("pass_env") or []
    if isinstance(extra, str) or not all(isinstance(n, str) for n in extra):
        raise UsageError(
            f"{provider.kind}: options.pass_env must be a list of variable names, got {extra!r}"
        )
    allowed = BASE_ENV | set(names) | set(extra)
    prefixes = _BASE_PREFIXES + prefixes
    env = {k: v for k, v in environ.items() if k in allowed or k.startswith(prefixes)}
    for name, value in (defaults or {}).items():
        env.setdefault(name, value)
    return env


async def run_cli(
    provider: LLMProvider,
    argv: list[str],
    stdin_text: str,
    *,
    env: dict[str, str],
    watch: LineWatcher | None = None,
) -> CliOutput:
    """Run ``argv`` with ``stdin_text`` on stdin and only ``env``; kill the whole process
    group on time-out, on cancellation, or when ``watch`` returns an error for a line."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # so a kill reaches the tool's children too
    )
    assert process.stdin and process.stdout and process.stderr
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    chunks: list[bytes] = []

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(stdin_text.encode())
            await stdin.drain()
        stdin.close()

    async def read_stdout() -> None:
        # Chunks, not readline(): one JSON line can be larger than a StreamReader's limit.
        pending = b""
        while chunk := await stdout.read(65536):
            chunks.append(chunk)
            if watch is None:
                continue
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                if (error := watch(line.decode("utf-8", "replace"))) is not None:
                    raise error

    async def run() -> bytes:
        tasks = [asyncio.ensure_future(c) for c in (feed(), read_stdout(), stderr.read())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        await process.wait()
        return tasks[2].result()  # type: ignore[no-any-return]

    try:
        err = await asyncio.wait_for(run(), timeout=provider.timeout)
    except (TimeoutError, asyncio.CancelledError, ProviderError) as error:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if not isinstance(error, TimeoutError):
            raise
        raise ProviderTimeout(
            f"`{os.path.basename(argv[0])}` gave no answer within {provider.timeout:g}s "
            "(killed; is it logged in and online?)",
            provider=provider.kind,
        ) from None
    return CliOutput(
        b"".join(chunks).decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        process.returncode or 0,
    )
