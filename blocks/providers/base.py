"""What a provider module provides: a spec (defaults, requirements) and one-attempt backend."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

from blocks.result import Usage

if TYPE_CHECKING:
    from blocks.llm_provider import LLMProvider

__all__ = ["Backend", "Message", "OnText", "ProviderSpec", "Segment"]

Message = dict[str, str]
OnText = Callable[[str], None]


@dataclass(frozen=True)
class Segment:
    """What one attempt of one model call returned (before continuation and retries)."""

    text: str
    finish_reason: str | None
    usage: Usage
    response_id: str | None = None


class Backend(Protocol):
    """Performs exactly one attempt; raises ``blocks.errors.ProviderError`` subclasses."""

    def __call__(
        self, provider: LLMProvider, messages: list[Message], on_text: OnText | None
    ) -> Awaitable[Segment]: ...


@dataclass(frozen=True)
class ProviderSpec:
    """Defaults and requirements of one provider kind; the registry holds one per kind."""

    name: str
    summary: str
    backend: Literal["litellm", "claude", "codex", "random"]
    default_model: str
    parallelism: int
    #: litellm model prefix, e.g. "openai" -> "openai/<model>".
    litellm_prefix: str | None = None
    key_env: str | None = None
    base_url_env: str | None = None
    default_base_url: str | None = None
    executable: str | None = None
    streams: bool = False
    #: How to start the kind's local server, for "nothing answers at ..." errors.
    start_hint: str | None = None

    def base_url(self) -> str | None:
        if self.base_url_env and (url := os.environ.get(self.base_url_env)):
            return url
        return self.default_base_url

    def requirement(self) -> str:
        """What this provider needs, as a person would say it."""
        if self.key_env:
            return self.key_env
        if self.executable:
            return f"`{self.executable}` on PATH"
        if self.default_base_url:
            env = f" (${self.base_url_env})" if self.base_url_env else ""
            return f"server at {self.base_url()}{env}"
        return "nothing"

    def requirement_met(self) -> bool:
        """Whether the requirement is present now; a server gets a 0.3 s TCP connect probe."""
        if self.key_env:  # an endpoint of one's own needs no key (a local server)
            return bool(os.environ.get(self.key_env) or self.base_url())
        if self.executable:
            return shutil.which(self.executable) is not None
        if url := self.base_url():
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                socket.create_connection((parts.hostname or "localhost", port), 0.3).close()
            except OSError:
                return False
        return True
