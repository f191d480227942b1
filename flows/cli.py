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

ENV_HELP = """
Environment (flags win over env):

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
  LITELLM_DEBUG        1 = litellm debug logging
  PREFECT_API_URL      the Prefect API to use; else a managed local server (started once,
                       kept running: `llm-conductor server status` shows its UI)
  LLM_CONDUCTOR_EPHEMERAL  1 = same as --ephemeral
  LLM_CONDUCTOR_SERVER_STARTUP_TIMEOUT  seconds a Prefect server may take to start (180)
  LLM_CONDUCTOR_RAISE_ERRORS  1 = show tracebacks for unexpected errors

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
    from flows.logs import configure_logging

    if ephemeral:
        from flows.runtime import EPHEMERAL_ENV

        os.environ[EPHEMERAL_ENV] = "1"
    configure_logging(verbose)


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
        loaded = LLMProvider.load(block)
        if provider and provider != loaded.kind:
            raise UsageError(
                f"--provider {provider} conflicts with block {block!r} ({loaded.kind})"
            )
        update = {k: v for k, v in overrides.items() if v is not None}
        return config_from_env(loaded.kind, cls=LLMProvider, **{**loaded.model_dump(), **update})
    return config_from_env(provider, cls=LLMProvider, **overrides)


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
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print the answer at the end, not as it arrives.")
    ] = False,
) -> None:
    """Send one prompt and stream the answer to stdout.

    Only the answer goes to stdout; logs and errors go to stderr. With PREFECT_API_URL set the
    call is a flow run in that Prefect server's UI; without it no Prefect server is started.
    """
    from flows.single import run_single

    llm = build_provider(
        provider,
        model,
        reasoning,
        block,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        api_base=api_base,
    )
    text = _read_prompt(prompt)
    llm.check_ready()
    completion = asyncio.run(run_single(text, llm, stream=not no_stream))
    if no_stream:
        sys.stdout.write(completion.text)
    if not completion.text.endswith("\n"):
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
) -> None:
    """Generate an output file for every changed *.prompt.md file.

    NAME.EXT.prompt.md -> NAME.EXT (e.g. .json is validated JSON); NAME.prompt.md -> NAME.json
    when the answer is JSON, else NAME.md. Unchanged prompts (same content, provider, model,
    parameters and format) are skipped. Exit 0 when nothing failed, 1 when a prompt failed,
    2 on usage errors, 130 on Ctrl-C (finished outputs are kept).
    """
    from flows.batch_run import run_batch

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
        dry=dry_run,
        task_per_prompt=not task_per_worker,
    )
    if not dry_run:
        typer.echo(summary.line(), err=True)
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
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info or warning (stderr).")
    ] = "info",
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
    )
    summary = run_explore(settings, output, fresh)
    typer.echo(summary.line(), err=True)
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
def list_providers() -> None:
    """List every provider: default model, default parallelism, what it needs, and whether
    that is present now (servers are not probed)."""
    from blocks.providers import PROVIDERS

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
