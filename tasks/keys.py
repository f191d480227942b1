"""Change detection: the key that says whether a prompt's output is up to date.

Two hashes exist side by side:

* ``prompt_key`` covers everything that shapes the answer (prompt bytes, provider, model,
  generation parameters, output format), so changing any of them regenerates the output;
* ``seed_hash`` is what the seed llm-conductor recorded (sha256 of the prompt bytes only). An
  output carrying it counts as up to date, so users migrating from the seed do not pay for
  every prompt a second time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["KEY_VERSION", "prompt_key", "seed_hash"]

#: Bumped only when the key's recipe changes; part of the hashed document.
KEY_VERSION = 1


def seed_hash(prompt_bytes: bytes) -> str:
    """Return the sha256 hex digest of the prompt file's bytes (the seed's prompt hash)."""
    return hashlib.sha256(prompt_bytes).hexdigest()


def prompt_key(
    prompt_bytes: bytes,
    *,
    provider: str,
    model: str,
    params: Mapping[str, Any],
    output_format: str,
) -> str:
    """Return the sha256 hex key of one prompt run.

    The key is the hash of a canonical JSON document (sorted keys, no whitespace), so it is the
    same on every machine and Python version. Parameters set to ``None`` are left out, since
    "unset" and "None" both mean the provider's default, and integral floats are written as
    integers (``temperature=1`` and ``1.0`` are the same request).

    Args:
        prompt_bytes: The prompt file exactly as stored (hashing bytes, not decoded text, means
            a re-encoding is a change, as it was in the seed).
        provider: Provider name, e.g. ``"openai"``.
        model: Model name as sent to the provider.
        params: Generation parameters (temperature, max_tokens, reasoning effort...); must be
            JSON-serialisable.
        output_format: ``"auto"`` or the explicit extension, e.g. ``"json"``.

    Raises:
        TypeError: A parameter value is not JSON-serialisable.
        ValueError: A parameter is NaN or infinite.
    """
    document = {
        "v": KEY_VERSION,
        "prompt": seed_hash(prompt_bytes),
        "provider": provider,
        "model": model,
        "params": {k: _canonical(v) for k, v in params.items() if v is not None},
        "format": output_format,
    }
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _canonical(value: Any) -> Any:
    # bool is an int subclass; only real floats are folded.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value
