"""Prefect deployments of the llm-conductor flows: ``prefect.yaml`` (the deployments) and
``python -m deployments.setup`` (block type, work pool and named provider blocks on a server)."""
