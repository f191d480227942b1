"""Prefect flows of llm-conductor: composition only, plus the llm-conductor CLI."""

from blocks import _prefect_env  # noqa: F401  (quiet Prefect defaults, before prefect is imported)
