"""The ``llm-conductor`` command line.

Only argument handling lives here: every command builds a provider block and calls a flow or a
plain function. Expected failures (``ConductorError``) become one line on stderr; anything else
is a bug and is shown in full (re-raised when LLM_CONDUCTOR_RAISE_ERRORS is set).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from blocks.errors import ConductorError, UsageError

__all__ = ["app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

# "\b" paragraphs are printed as written (Click re-wraps every other paragraph into prose).
ENV_HELP = """
Environment (flags win over env):

\b
  MODEL_PROVIDER       default --provider (openai)
  MODEL_NAME           default --model
  MODEL_REASONING      default --reasoning: minimal, low, medium, high
  OPENAI_API_KEY, OPENROUTER_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY   provider keys
  OPENAI_BASE_URL      OpenAI-compatible endpoint (local models)
  LMSTUDIO_BASE_URL    default http://localhost:1234/v1
  OLLAMA_BASE_URL      default http://localhost:11434
  OPENAI_TEMPERATURE   sampling temperature
  OPENAI_MAX_TOKENS    max tokens per answer segment
  LITELLM_NUM_RETRIES  retries after 429/5xx/timeouts (default 3)
  LITELLM_TIMEOUT      seconds per attempt, fractions allowed (default 120)
  LITELLM_APP_RETRIES  retries after an empty answer (default 3)
  LLM_CONDUCTOR_ACCEPT_TRUNCATED  1 = as --accept-truncated
  LITELLM_DEBUG        1 = litellm debug logging
  PREFECT_API_URL      the Prefect API to use; else a managed local server (started once,
                       kept running: `llm-conductor server status` shows its UI)
  LLM_CONDUCTOR_EPHEMERAL  1 = same as --ephemeral
  LLM_CONDUCTOR_SERVER_STARTUP_TIMEOUT  seconds a Prefect server may take to start (180)
  LLM_CONDUCTOR_RAISE_ERRORS  1 = show tracebacks for unexpected errors

\b
Tracing (off unless switched on):
  LITELLM_MLFLOW_ENABLED=true   traces to MLflow
  MLFLOW_TRACKING_URI           store or server (default sqlite:///mlflow.db)
  MLFLOW_EXPERIMENT_NAME        experiment (default llm-conductor)
  LITELLM_OTEL_ENABLED=true     spans to an OTLP/HTTP collector
  TRACELOOP_BASE_URL            collector, e.g. http://localhost:4318
  TRACELOOP_HEADERS             name=value,... sent with every export
  TRACELOOP_TRACE_RATE          fraction of traces kept, 0.0-1.0 (default 1.0)
  OTEL_SERVICE_NAME             service.name of the spans (default llm-conductor)
  TRACELOOP_TELEMETRY_ENABLED=true   lets MLflow send its usage telemetry
  LLM_CONDUCTOR_TRACE_CONTENT=false  no prompt or completion text in spans

\b
Defaults from llm-conductor.toml or pyproject.toml's [tool.llm-conductor] (below env and
flags): see llm-conductor config.
Logs: .local/logs/llm-conductor.log (DEBUG, rotating); INFO and warnings on stderr.
Exit codes: 0 ok, 1 provider or prompt failure (or the Prefect server lost), 2 usage error,
130 Ctrl-C, 143 SIGTERM (finished outputs kept; a second Ctrl-C exits at once).
"""

app = typer.Typer(
    name="llm-conductor",
    help="Run LLM prompts reliably, fast and observably, as Prefect flows.",
    epilog=ENV_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version() -> str:
    try:
        return version("llm-conductor")
    except PackageNotFoundError:
        return "unknown"


#: Version of the ``--json`` documents (README, "Machine-readable output"); bumped only when a
#: key is removed or changes meaning.
JSON_SCHEMA_VERSION = 1

JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON document on stdout (README: its schema) and nothing else."
    ),
]


def _print_json(command: str, document: dict[str, Any]) -> None:
    import json

    document = {"schema": f"llm-conductor.{command}.v{JSON_SCHEMA_VERSION}", **document}
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def handle_errors(command: F) -> F:
    """Map expected errors onto exit codes: usage 2, provider or prompt failure 1, Ctrl-C 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UsageError as error:
            raise _fail(str(error), 2) from None
        except ConductorError as error:
            raise _fail(str(error), 1) from None
        except KeyboardInterrupt:
            from flows.interrupt import stop_exit_code

            code = stop_exit_code()
            raise _fail("terminated" if code == 143 else "interrupted", code) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as error:
            if os.environ.get("LLM_CONDUCTOR_RAISE_ERRORS"):
                raise
            raise _fail(f"unexpected {type(error).__name__}: {error}", 1) from None

    return wrapper  # type: ignore[return-value]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"llm-conductor {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="DEBUG logs on stderr too.")
    ] = False,
    _version_flag: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
    ephemeral: Annotated[
        bool,
        typer.Option(
            "--ephemeral",
            help="Without PREFECT_API_URL: a throwaway Prefect API for this command only "
            "(slower start, nothing left running) instead of the managed local server "
            "[env LLM_CONDUCTOR_EPHEMERAL=1].",
        ),
    ] = False,
) -> None:
    from blocks.settings import apply, load
    from flows.logs import configure_logging

    if ephemeral:
        from flows.runtime import EPHEMERAL_ENV

        os.environ[EPHEMERAL_ENV] = "1"
    configure_logging(verbose)
    try:  # the project's configuration file: defaults below flags and the environment
        _path, config = load()
    except UsageError as error:
        raise _fail(str(error), 2) from None
    ctx.default_map = {**apply(config), **(ctx.default_map or {})}


# Options shared by every command that calls a model.
ProviderOpt = Annotated[
    str | None,
    typer.Option(
        "--provider", "-p", help="Provider kind or a litellm model string [env MODEL_PROVIDER]."
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model [env MODEL_NAME].")]
ReasoningOpt = Annotated[
    str | None,
    typer.Option(
        "--reasoning", help="Reasoning effort: minimal, low, medium, high [env MODEL_REASONING]."
    ),
]
BlockOpt = Annotated[
    str | None,
    typer.Option("--block", help="Load a saved LLM Provider block by name (needs a Prefect API)."),
]
TemperatureOpt = Annotated[
    float | None, typer.Option("--temperature", help="[env OPENAI_TEMPERATURE]")
]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", help="[env OPENAI_MAX_TOKENS]")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Seconds per attempt [env LITELLM_TIMEOUT].")
]
ApiBaseOpt = Annotated[str | None, typer.Option("--api-base", help="Endpoint URL override.")]
AcceptTruncatedOpt = Annotated[
    bool,
    typer.Option(
        "--accept-truncated",
        help="Keep an answer still cut off by the token limit after the continuations (marked "
        "truncated) instead of failing [env LLM_CONDUCTOR_ACCEPT_TRUNCATED].",
    ),
]


def build_provider(
    provider: str | None,
    model: str | None,
    reasoning: str | None,
    block: str | None = None,
    *,
    config_only: bool = False,
    **overrides: Any,
) -> Any:
    """The provider block from a saved block or env, with the flags applied on top.

    ``config_only``: without ``block``, only the block's configuration (``ProviderConfig``),
    which does not import Prefect; ``run_batch`` makes the block when there is work.
    """
    from blocks.config import config_from_env

    overrides = {"model": model, "reasoning_effort": reasoning, **overrides}
    if not block and config_only:
        return config_from_env(provider, **overrides)
    from blocks.llm_provider import LLMProvider

    if block:
        loaded = load_block(block)
        if provider and provider != loaded.kind:
            raise UsageError(
                f"--provider {provider} conflicts with block {block!r} ({loaded.kind})"
            )
        # The saved block is the configuration (the environment does not change it); flags
        # win. Validated as a whole, then copied so that the block keeps its saved identity.
        update = {k: v for k, v in overrides.items() if v is not None}
        if update:
            from blocks.config import ProviderConfig, _one_line_validation_error

            fields = loaded.model_dump(exclude={"block_type_slug"})
            try:
                ProviderConfig.model_validate({**fields, **update})
            except ValueError as error:
                raise UsageError(_one_line_validation_error(error)) from None
        return loaded.model_copy(update=update)
    return config_from_env(provider, cls=LLMProvider, **overrides)


def load_block(name: str) -> Any:
    """The saved ``LLMProvider`` block ``name`` from the API the command uses (the configured
    one, else the managed local server: flows/runtime.py); a missing one is a usage error
    naming it."""
    from blocks.llm_provider import LLMProvider
    from flows.runtime import prefect_runtime

    with prefect_runtime(announce=False) as api_url:
        try:
            return LLMProvider.load(name)
        except ValueError as error:
            if "Unable to find block document" not in str(error):
                raise
            raise UsageError(
                f"no LLM Provider block named {name!r} at {api_url} (save one first: "
                "python -m deployments.setup, or LLMProvider(...).save(NAME))"
            ) from None


def _read_prompt(prompt: str | None) -> str:
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no prompt: pass --prompt TEXT or pipe the prompt on stdin")
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    return prompt


@app.command()
@handle_errors
def run(
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="The prompt; read from stdin when omitted.")
    ] = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    reasoning: ReasoningOpt = None,
    block: BlockOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    timeout: TimeoutOpt = None,
    api_base: ApiBaseOpt = None,
    accept_truncated: AcceptTruncatedOpt = False,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print the answer at the end, not as it arrives.")
    ] = False,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Print the answer byte for byte: no newline added at the end."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send one prompt and stream the answer to stdout.

    Only the answer goes to stdout, followed by a newline when it does not end with one
    (--raw: exactly the answer); logs and errors go to stderr. With PREFECT_API_URL set the
    call is a flow run in that Prefect server's UI; without it no Prefect server is started.
    """
    from flows.single_run import run_single

    llm = build_provider(
        provider,
        model,
        reasoning,
        block,
        config_only=True,  # run_single makes the block only for a flow run
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        api_base=api_base,
        accept_truncated=accept_truncated or None,
    )
    text = _read_prompt(prompt)
    llm.check_ready()
    completion = asyncio.run(run_single(text, llm, stream=not (no_stream or as_json)))
    if as_json:
        _print_json(
            "run",
            {
                "answer": completion.text,
                "provider": completion.provider,
                "model": completion.model,
                "finish_reason": completion.finish_reason,
                "usage": {
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "total_tokens": completion.usage.total_tokens,
                },
                "cost": completion.cost,
                "attempts": completion.attempts,
                "segments": completion.segments,
                "response_id": completion.response_id,
                "elapsed_seconds": round(completion.elapsed, 3),
            },
        )
        return
    if no_stream:
        sys.stdout.write(completion.text)
    if not raw and not completion.text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


@app.command()
@handle_errors
def batch(
    input_dir: Annotated[
        Path, typer.Option("--input-dir", "-i", help="Folder of *.prompt.md files.")
    ] = Path("prompts"),
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where outputs go (created if missing).")
    ] = Path("outputs"),
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Scan subfolders too.")
    ] = False,
    parallelism: Annotated[
        int | None,
        typer.Option("--parallelism", "-j", help="Prompts in flight [default: the provider's]."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Regenerate every prompt, changed or not.")
    ] = False,
    files_from: Annotated[
        str | None,
        typer.Option(
            "--files-from",
            help="Run exactly the prompt files listed in FILE, one per line ('-' = stdin).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would run, with a token/cost estimate.")
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", help="Stop starting new prompts once this many USD are spent."),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget",
            help="Start no prompt after this many seconds (in-flight ones finish): to end "
            "before a time-out with every paid answer written.",
        ),
    ] = None,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Run only the prompts that failed last time.")
    ] = False,
    task_per_worker: Annotated[
        bool,
        typer.Option(
            "--task-per-worker",
            help="One Prefect task run per worker (-j), not per prompt: for fast providers and "
            "big batches, where Prefect's ≈30 ms of CPU per task run sets the pace. Outputs, "
            "manifest, artifacts and the answer cache are the same.",
        ),
    ] = False,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    reasoning: ReasoningOpt = None,
    block: BlockOpt = None,
    temperature: TemperatureOpt = None,
    max_tokens: MaxTokensOpt = None,
    timeout: TimeoutOpt = None,
    api_base: ApiBaseOpt = None,
    accept_truncated: AcceptTruncatedOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate an output file for every changed *.prompt.md file.

    NAME.EXT.prompt.md -> NAME.EXT (e.g. .json is validated JSON); NAME.prompt.md -> NAME.json
    when the answer is JSON, else NAME.md. Unchanged prompts (same content, provider, model,
    parameters and format) are skipped. Exit 0 when nothing failed, 1 when a prompt failed,
    2 on usage errors, 130 on Ctrl-C (finished outputs are kept).
    """
    from flows.batch_run import run_batch

    if as_json and dry_run:
        raise UsageError("--json does not apply to --dry-run (its report is for people)")
    llm = build_provider(
        provider,
        model,
        reasoning,
        block,
        config_only=True,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        api_base=api_base,
        accept_truncated=accept_truncated or None,
    )
    listed = None
    if files_from is not None:
        listed = _read_list(files_from)
    summary = run_batch(
        llm,
        input_dir,
        output_dir,
        recursive=recursive,
        parallelism=parallelism,
        force=force,
        retry_errors=retry_errors,
        files_from=listed,
        max_cost=max_cost,
        time_budget=time_budget,
        dry=dry_run,
        task_per_prompt=not task_per_worker,
    )
    if not dry_run:
        typer.echo(summary.line(), err=True)
    if as_json:
        _print_json(
            "batch",
            {
                "summary": {
                    **summary.model_dump(exclude={"prompts"}),
                    "exit_code": summary.exit_code,
                },
                "prompts": [outcome.model_dump() for outcome in summary.prompts],
            },
        )
    raise typer.Exit(summary.exit_code)


def _read_list(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read --files-from {source}: {error}") from None


@app.command()
@handle_errors
def explore(
    topic: Annotated[str, typer.Option("--topic", "-t", help="What to explore.")],
    producers: Annotated[int, typer.Option("--producers", help="Concurrent producers.")] = 5,
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", help="Accepted batches in total [default: until Ctrl-C]."),
    ] = None,
    max_requests: Annotated[
        int | None, typer.Option("--max-requests", help="Requests per producer, at most.")
    ] = None,
    routing_strategy: Annotated[
        str,
        typer.Option(
            "--routing-strategy",
            envvar="ROUTING_STRATEGY",
            help="backoff, roundrobin, priority or weighted [env ROUTING_STRATEGY].",
        ),
    ] = "backoff",
    routing_config: Annotated[
        str,
        typer.Option(
            "--routing-config",
            envvar="ROUTING_CONFIG",
            help="provider:model[:weight],... e.g. 'openai:gpt-4o-mini,anthropic:claude-3-5-haiku"
            "-20241022'; 'random:random' works offline [env ROUTING_CONFIG].",
        ),
    ] = "openai:gpt-4o-mini",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Topic folder [default: ./output/<topic-slug>/]."),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Start over; the previous files move to previous-<time>/."),
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seeds weighted routing and the random provider.")
    ] = None,
    similarity: Annotated[
        float,
        typer.Option("--similarity", help="Near-duplicate score 0-100 (100 = exact keys only)."),
    ] = 92.0,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Completion tokens per request; a list cut there is read as it is (never "
            "continued). 0 = the provider's own (OPENAI_MAX_TOKENS) [default: 150, sized "
            "for the 10 short lines asked for].",
        ),
    ] = None,
    max_words: Annotated[
        int | None,
        typer.Option("--max-words", help="Longer lines are prose, not attributes [default: 10]."),
    ] = None,
    semantic_model: Annotated[
        str | None,
        typer.Option(
            "--semantic-model",
            help="Embeddings model (provider:model, e.g. openai:text-embedding-3-small) for "
            "semantic dedup: 'Triumphal Arch' is 'Arc de Triomphe' [default: off].",
        ),
    ] = None,
    semantic_threshold: Annotated[
        float | None,
        typer.Option(
            "--semantic-threshold", help="Cosine similarity 0-1 of one meaning [default: 0.9]."
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info or warning (stderr).")
    ] = "info",
    as_json: JsonOpt = False,
) -> None:
    """Explore a topic: producers ask LLMs for its attributes concurrently; every answer is
    deduplicated across all of them (Unicode-normalised keys plus near-duplicate matching).

    Writes output.txt, output.json and metadata.json in the topic folder, continuing what is
    already there. Ctrl-C stops cleanly with everything flushed.
    """
    from flows.explore import run_explore
    from flows.logs import set_stderr_level
    from tasks.explore import ExploreSettings

    set_stderr_level(log_level)
    settings = ExploreSettings(
        topic=topic,
        producers=producers,
        iterations=iterations,
        max_requests=max_requests,
        routing_strategy=routing_strategy,
        routing_config=routing_config,
        similarity=similarity,
        seed=seed,
        **({} if max_tokens is None else {"max_tokens": max_tokens or None}),
        **({} if max_words is None else {"max_words": max_words}),
        **({} if semantic_threshold is None else {"semantic_threshold": semantic_threshold}),
        semantic_model=semantic_model,
    )
    summary = run_explore(settings, output, fresh)
    typer.echo(summary.line(), err=True)
    if as_json:
        _print_json("explore", {**summary.model_dump(), "exit_code": summary.exit_code})
    raise typer.Exit(summary.exit_code)


@app.command()
@handle_errors
def web(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on; anything but loopback exposes the page."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
    output_root: Annotated[
        Path,
        typer.Option("--output-root", help="Topic folders go here, one per topic slug."),
    ] = Path("output"),
) -> None:
    """Serve the live web page for topic exploration.

    Same as ``python -m web``. The page starts and stops explore runs (the flow ``explore``
    runs, one at a time) and shows them live: counts, unique attributes and cost per minute,
    duplicate rate, a chart of new attributes per batch, per-provider stats, the attributes
    themselves (searchable), the output files and, with PREFECT_API_URL set, a link to the
    flow run in the Prefect UI (PREFECT_UI_URL if the UI has another address). Without
    PREFECT_API_URL the managed local Prefect server is used (--ephemeral: a throwaway API
    that starts with the page). Ctrl-C stops the server; a run that is going is stopped
    first, its files flushed.
    """
    from web.server import serve

    serve(host, port, output_root=output_root)


server_app = typer.Typer(
    help="The managed local Prefect server (used when no PREFECT_API_URL is set).",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")


@server_app.command("start")
@handle_errors
def server_start() -> None:
    """Start the server (or find it running) and print its UI URL."""
    from flows.runtime import ManagedServer

    _note_configured_api()
    state = ManagedServer().ensure(announce=False)
    typer.echo(f"Prefect server running: UI {state.ui_url}  API {state.api_url}  pid {state.pid}")


@server_app.command("stop")
@handle_errors
def server_stop() -> None:
    """Stop the server if it runs."""
    from flows.runtime import ManagedServer

    state = ManagedServer().stop()
    typer.echo(f"Prefect server stopped (pid {state.pid})" if state else "no server was running")


@server_app.command("status")
@handle_errors
def server_status() -> None:
    """Print the UI URL if the server runs (exit 0), else say so (exit 3)."""
    from flows.runtime import ManagedServer

    server = ManagedServer()
    _note_configured_api()
    state = server.running()
    if state is None:
        typer.echo(f"no Prefect server running (Prefect home {server.home})")
        raise typer.Exit(3)
    typer.echo(f"Prefect server running: UI {state.ui_url}  API {state.api_url}  pid {state.pid}")


def _note_configured_api() -> None:
    from flows.runtime import configured_api_url

    if url := configured_api_url():
        typer.echo(
            f"note: commands use the configured Prefect API {url}, not this server", err=True
        )


@app.command("list")
@handle_errors
def list_providers(as_json: JsonOpt = False) -> None:
    """List every provider: default model, default parallelism, what it needs, and whether
    that is present now (servers are not probed)."""
    from blocks.providers import PROVIDERS

    if as_json:
        providers = [
            {
                "name": spec.name,
                "default_model": spec.default_model or None,
                "parallelism": spec.parallelism,
                "needs": spec.requirement(),
                "ready": spec.requirement_met(),
            }
            for spec in PROVIDERS.values()
        ]
        _print_json("list", {"providers": providers})
        return

    rows = [("PROVIDER", "DEFAULT MODEL", "PARALLEL", "NEEDS", "READY")]
    for spec in PROVIDERS.values():
        ready = "yes" if spec.requirement_met() else "no"
        rows.append(
            (spec.name, spec.default_model or "-", str(spec.parallelism), spec.requirement(), ready)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@app.command("config")
@handle_errors
def show_config() -> None:
    """Show every setting a command would use without flags, and where it comes from: env
    NAME, file PATH (llm-conductor.toml or pyproject.toml's [tool.llm-conductor]) or
    built-in. Keys are never shown, only whether they are set."""
    import click

    from blocks.config import ProviderConfig
    from blocks.settings import SETTINGS, load, source_of

    path, config = load()
    group = typer.main.get_command(app)
    rows = [("SETTING", "VALUE", "SOURCE")]
    for setting in SETTINGS:
        value, source = source_of(setting, config, path)
        if setting.secret:
            shown = "<redacted>" if value else "-"
        elif value is not None:
            shown = str(value)
        else:
            shown = _builtin(setting, group, ProviderConfig, click)
        rows.append((setting.key, shown, source))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for key, shown, source in rows:
        typer.echo(f"{key.ljust(widths[0])}  {shown.ljust(widths[1])}  {source}")


def _builtin(setting: Any, group: Any, provider_config: Any, click: Any) -> str:
    """The built-in default of ``setting``: its command option's or the provider block's."""
    name = setting.key.split(".")[-1]
    if setting.command:
        command = group.commands[setting.command]
        for param in command.params:
            if param.name == name and param.default is not None:
                return str(param.default)
        return "-"
    field = {"provider": "kind", "reasoning": "reasoning_effort"}.get(name, name)
    info = provider_config.model_fields.get(field)
    if info is not None and info.default is not None and not callable(info.default):
        return str(info.default)
    return "-"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; the process is expected to exit when it returns.

    On the way out, ``gc.freeze()``: the interpreter's final garbage collections walk
    litellm's and Prefect's object graphs for ≈1.2 s (measured) and free nothing the OS would
    not. atexit handlers (log and trace flushing) still run first.
    """
    from flows.interrupt import install_signal_handlers

    install_signal_handlers()  # before the heavy imports: Ctrl-C works from the start
    try:
        app(args=argv, prog_name="llm-conductor")
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
