"""Whether a Prefect API is configured, decided without starting anything."""

from __future__ import annotations

import os

__all__ = ["prefect_api_url"]


def prefect_api_url() -> str | None:
    """The configured Prefect API URL (env or active profile), or None for ephemeral mode."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None
