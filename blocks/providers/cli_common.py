"""Running the claude and codex executables: no shell, prompt on stdin, hard timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blocks.errors import CliProviderError, ProviderTimeout
from blocks.providers.base import Message

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["CliOutput", "flatten_messages", "run_cli"]

_INSTALL_HINT = {
    "claude": "npm install -g @anthropic-ai/claude-code, then run `claude` once to log in",
    "codex": "npm install -g @openai/codex, then `codex login`",
}


@dataclass(frozen=True)
class CliOutput:
    stdout: str
    stderr: str
    returncode: int

    def stderr_tail(self, lines: int = 5) -> str:
        return " | ".join(self.stderr.strip().splitlines()[-lines:])


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


async def run_cli(provider: LLMProvider, argv: list[str], stdin_text: str) -> CliOutput:
    """Run ``argv`` with ``stdin_text`` on stdin; kill the whole process group on time-out."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so a time-out can kill the tool's children too
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(stdin_text.encode()), timeout=provider.timeout
        )
    except (TimeoutError, asyncio.CancelledError) as error:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if isinstance(error, asyncio.CancelledError):
            raise
        raise ProviderTimeout(
            f"`{os.path.basename(argv[0])}` gave no answer within {provider.timeout:g}s "
            "(killed; is it logged in and online?)",
            provider=provider.kind,
        ) from None
    return CliOutput(
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
        process.returncode or 0,
    )
