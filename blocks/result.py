"""The one result type every provider returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Completion", "Usage"]


class Usage(BaseModel):
    """Token counts and cost of one or more model calls."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: USD; None when neither litellm nor the CLI reported it (never guessed).
    cost: float | None = None
    #: The token counts are litellm's estimate: the server reported none (llama.cpp-style
    #: streams without usage).
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        costs = [c for c in (self.cost, other.cost) if c is not None]
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=sum(costs) if costs else None,
            estimated=self.estimated or other.estimated,
        )


class Completion(BaseModel):
    """What one prompt produced, whatever the provider.

    ``text`` is the exact concatenation of every segment when the answer was continued after
    ``finish_reason == "length"``; ``usage`` sums all of them.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    response_id: str | None = None
    provider: str
    model: str
    segments: int = 1
    attempts: int = 1
    elapsed: float = 0.0

    @property
    def truncated(self) -> bool:
        """Still cut off by the token limit: only returned when truncation is accepted."""
        return self.finish_reason == "length"

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens

    @property
    def cost(self) -> float | None:
        return self.usage.cost

    def metadata(self) -> dict[str, object]:
        """The compact record written next to outputs and into the manifest."""
        return {
            "provider": self.provider,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cost": self.usage.cost,
            "response_id": self.response_id,
            "segments": self.segments,
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 3),
            # Only when true, so that an ordinary answer's record stays as it was.
            **({"truncated": True} if self.truncated else {}),
            **({"usage_estimated": True} if self.usage.estimated else {}),
        }
