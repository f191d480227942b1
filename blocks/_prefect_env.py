"""Quiet, offline-friendly Prefect defaults; applied before ``import prefect``.

Only defaults: anything the user set wins. Prefect reads these once at import.
"""

import os

for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # else a telemetry ERROR line per run offline
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "llm_conductor",  # our logs reach the Prefect UI too
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # 20 s by default; a busy 2-core machine needs more for the first start of a fresh home.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # plain calls log outside flows
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # never fetch the cost map at import
}.items():
    os.environ.setdefault(_name, _value)
