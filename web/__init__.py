"""The live web page for topic exploration (``llm-conductor web``, ``python -m web``).

One page: a form that starts the explore flow, Stop, live metrics, the attributes as they
arrive, a chart, per-provider stats and the output files; updates stream as server-sent
events. ``web.app.create_app`` builds the Starlette app; ``web.server.serve`` runs it.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):  # lazy: ``import web`` stays cheap
    if name == "create_app":
        from web.app import create_app

        return create_app
    if name == "serve":
        from web.server import serve

        return serve
    raise AttributeError(name)
