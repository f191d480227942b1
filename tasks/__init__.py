"""Prefect tasks of llm-conductor and the Prefect-free logic they call."""

from blocks import _prefect_env  # noqa: F401  (quiet Prefect defaults, before prefect is imported)
