"""Prepare a Prefect server for the deployments in ``deployments/prefect.yaml``; idempotent.

    python -m deployments.setup                       # type, pool, blocks from the environment
    python -m deployments.setup --block local --kind openai --model my-model \\
        --api-base http://127.0.0.1:8000/v1 --api-key-env LOCAL_KEY --parallelism 4

Against the server in ``PREFECT_API_URL`` (or the active profile's; without one, the managed
local server, started if needed: see flows/runtime.py), it:

1. registers the ``LLM Provider`` block type (what ``prefect block register -m
   blocks.llm_provider`` does; ``-m blocks`` finds nothing, the package imports it lazily);
2. creates the ``process`` work pool the deployments use (``llm-conductor``), if missing;
3. saves named provider blocks, overwriting blocks of the same name (``--keep-existing`` leaves
   them alone):

   ========== ============================================= ===================================
   block      kind                                          created when
   ========== ============================================= ===================================
   offline    random (seed 0), no key, no network           always
   openai     openai, key stored (``OPENAI_BASE_URL`` too)  ``OPENAI_API_KEY`` is set
   openrouter openrouter, key stored                        ``OPENROUTER_API_KEY`` is set
   anthropic  anthropic, key stored                         ``ANTHROPIC_API_KEY`` is set
   gemini     gemini, key stored                            ``GEMINI_API_KEY`` is set
   lmstudio   lmstudio at ``LMSTUDIO_BASE_URL``             that variable is set
   ollama     ollama at ``OLLAMA_BASE_URL``                 that variable is set
   claude-code / openai-codex                               ``claude`` / ``codex`` on PATH
   ========== ============================================= ===================================

   ``MODEL_NAME`` applies to the ``MODEL_PROVIDER`` block only; ``OPENAI_TEMPERATURE``,
   ``OPENAI_MAX_TOKENS``, ``LITELLM_TIMEOUT``, ``LITELLM_NUM_RETRIES``, ``MODEL_REASONING``
   apply to every block (as for ``llm-conductor --provider``). Keys are stored as the block's
   ``SecretStr`` (encrypted at rest, never shown in the UI); a worker then needs no key in its
   environment.

``--block NAME --kind KIND [...]`` saves one more block from flags instead (the test suite's
way of pointing a block at its local server). Exit codes: 0 done, 2 usage error (bad flag,
``LLM_CONDUCTOR_EPHEMERAL`` without a configured API), 1 the server failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from blocks import _prefect_env  # noqa: F401  (quiet Prefect defaults, before importing it)
from blocks.errors import ConductorError, UsageError

__all__ = ["blocks_from_env", "main", "setup"]

PREFECT_YAML = Path(__file__).resolve().parent / "prefect.yaml"
DEFAULT_POOL = "llm-conductor"

#: Blocks made when their kind's key is in the environment (name = kind).
KEYED_KINDS = ("openai", "openrouter", "anthropic", "gemini")
#: Blocks made when the kind's server address is in the environment.
SERVER_KINDS = ("lmstudio", "ollama")
#: Blocks made when the kind's command-line tool is on PATH.
CLI_KINDS = ("claude-code", "openai-codex")


def pool_name(prefect_yaml: Path = PREFECT_YAML) -> str:
    """The work pool named in ``prefect.yaml`` (``definitions.work_pool.name``)."""
    import yaml

    try:
        config = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
        return str(config["definitions"]["work_pool"]["name"])
    except (OSError, KeyError, TypeError):
        return DEFAULT_POOL


def blocks_from_env() -> dict[str, Any]:
    """Name -> ``LLMProvider`` for every provider the environment makes usable."""
    from pydantic import SecretStr

    from blocks.llm_provider import provider_from_env
    from blocks.providers import get_spec

    def build(kind: str, **overrides: Any) -> Any:
        return _without_foreign_model(provider_from_env(kind, **overrides), None)

    made: dict[str, Any] = {"offline": build("random", options={"seed": 0})}
    for kind in KEYED_KINDS:
        spec = get_spec(kind)
        if key := os.environ.get(spec.key_env or ""):
            base = os.environ.get(spec.base_url_env or "") or None
            made[kind] = build(kind, api_key=SecretStr(key), api_base=base)
    for kind in SERVER_KINDS:
        spec = get_spec(kind)
        if base := os.environ.get(spec.base_url_env or ""):
            made[kind] = build(kind, api_base=base)
    for kind in CLI_KINDS:
        if shutil.which(get_spec(kind).executable or ""):
            made[kind] = build(kind)
    return made


def block_from_flags(args: argparse.Namespace) -> Any:
    """The one block described by ``--kind``, ``--model``, ... (``--block`` names it)."""
    from pydantic import SecretStr

    from blocks.llm_provider import provider_from_env

    overrides: dict[str, Any] = {
        "model": args.model,
        "api_base": args.api_base,
        "parallelism": args.parallelism,
        "timeout": args.timeout,
        "retries": args.retries,
    }
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise UsageError(f"--api-key-env {args.api_key_env}: that variable is not set")
        overrides["api_key"] = SecretStr(key)
    return _without_foreign_model(provider_from_env(args.kind, **overrides), args.model)


def _without_foreign_model(block: Any, explicit_model: str | None) -> Any:
    """``MODEL_NAME`` belongs to the ``MODEL_PROVIDER`` kind: any other block keeps its
    kind's default model (None = resolved at run time) unless a model was given."""
    if explicit_model is None and os.environ.get("MODEL_PROVIDER", "") != block.kind:
        block.model = None
    return block


async def setup(
    blocks: dict[str, Any], *, pool: str = DEFAULT_POOL, overwrite: bool = True
) -> dict[str, str]:
    """Register the block type, create the pool, save ``blocks``; returns name -> what
    happened ("created", "updated", "kept")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from blocks.llm_provider import LLMProvider

    done: dict[str, str] = {}
    async with get_client() as client:
        if (error := await client.api_healthcheck()) is not None:
            raise ConnectionError(f"Prefect API at {client.api_url} is not answering: {error}")
        await LLMProvider.aregister_type_and_schema(client=client)
        try:
            await client.read_work_pool(pool)
            done[f"pool {pool}"] = "kept"
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=pool,
                        type=ProcessWorker.type,
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                        description="llm-conductor flows, run as local processes",
                    )
                )
                done[f"pool {pool}"] = "created"
            except ObjectAlreadyExists:  # created meanwhile by a worker or another setup
                done[f"pool {pool}"] = "kept"
        for name, block in blocks.items():
            try:
                await client.read_block_document_by_name(
                    name, LLMProvider.get_block_type_slug(), include_secrets=False
                )
                exists = True
            except ObjectNotFound:
                exists = False
            if exists and not overwrite:
                done[name] = "kept"
                continue
            await block.asave(name, overwrite=True, client=client)
            done[name] = "updated" if exists else "created"
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.setup",
        description="Register the LLM Provider block type, the work pool and provider blocks "
        "on the Prefect server in PREFECT_API_URL, else the managed local one (idempotent).",
    )
    parser.add_argument("--pool", default=None, help="work pool [default: prefect.yaml's]")
    parser.add_argument(
        "--keep-existing", action="store_true", help="leave blocks that already exist alone"
    )
    parser.add_argument(
        "--no-env-blocks", action="store_true", help="skip the blocks made from the environment"
    )
    one = parser.add_argument_group("one more block, from flags")
    one.add_argument("--block", metavar="NAME", help="its name")
    one.add_argument("--kind", help="provider kind (see `llm-conductor list`)")
    one.add_argument("--model")
    one.add_argument("--api-base", metavar="URL")
    one.add_argument("--api-key-env", metavar="VAR", help="store the key read from this variable")
    one.add_argument("--parallelism", type=int, help="max requests in flight")
    one.add_argument("--timeout", type=float, help="seconds per attempt")
    one.add_argument("--retries", type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from flows.runtime import configured_api_url, ephemeral_requested, prefect_runtime

    try:
        if bool(args.block) != bool(args.kind):
            raise UsageError("--block NAME and --kind KIND go together")
        if not configured_api_url() and ephemeral_requested():
            raise UsageError(
                "deployments need a Prefect server that keeps running: unset "
                "LLM_CONDUCTOR_EPHEMERAL (the managed local server is used) or set "
                "PREFECT_API_URL"
            )
        blocks = {} if args.no_env_blocks else blocks_from_env()
        if args.block:
            blocks[args.block] = block_from_flags(args)
        with prefect_runtime() as api_url:
            done = asyncio.run(
                setup(blocks, pool=args.pool or pool_name(), overwrite=not args.keep_existing)
            )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ConductorError, ConnectionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"block type llm-provider registered at {api_url}")
    for name, what in done.items():
        label = name if name.startswith("pool ") else f"block llm-provider/{name}"
        print(f"{label}: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
