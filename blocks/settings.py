"""Project configuration files: ``llm-conductor.toml`` or ``[tool.llm-conductor]``.

Precedence: flags > environment > file > built-in. The file does not add a third way of
reading settings: its provider, limit and tracing values become defaults of the environment
variables the code already reads (``os.environ.setdefault``), and its batch and explore values
become defaults of those commands' options (Click's ``default_map``, below the environment for
options that have a variable). ``llm-conductor config`` shows each value and where it came from.

Example ``llm-conductor.toml`` (in ``pyproject.toml``: the same under ``[tool.llm-conductor]``)::

    provider = "openai"
    model = "gpt-4o-mini"
    timeout = 60

    [batch]
    input_dir = "prompts"
    output_dir = "outputs"
    recursive = true
    parallelism = 8
    max_cost = 2.5

    [explore]
    routing_config = "openai:gpt-4o-mini,anthropic:claude-3-5-haiku-20241022"

    [tracing]
    mlflow = true
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks.errors import UsageError

__all__ = ["CONFIG_FILE", "SETTINGS", "ProjectConfig", "Setting", "apply", "find_config", "load"]

CONFIG_FILE = "llm-conductor.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchDefaults(_Section):
    input_dir: str | None = None
    output_dir: str | None = None
    recursive: bool | None = None
    parallelism: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    time_budget: float | None = Field(default=None, gt=0)


class ExploreDefaults(_Section):
    producers: int | None = Field(default=None, ge=1)
    routing_strategy: Literal["backoff", "roundrobin", "priority", "weighted"] | None = None
    routing_config: str | None = None
    similarity: float | None = Field(default=None, ge=0, le=100)


class TracingDefaults(_Section):
    mlflow: bool | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str | None = None
    otel: bool | None = None
    otel_endpoint: str | None = None
    service_name: str | None = None
    content: bool | None = None


class ProjectConfig(_Section):
    """What a configuration file may hold; unknown keys (API keys included) are errors."""

    provider: str | None = None
    model: str | None = None
    reasoning: Literal["minimal", "low", "medium", "high"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0)
    empty_retries: int | None = Field(default=None, ge=0)
    batch: BatchDefaults = Field(default_factory=BatchDefaults)
    explore: ExploreDefaults = Field(default_factory=ExploreDefaults)
    tracing: TracingDefaults = Field(default_factory=TracingDefaults)


@dataclass(frozen=True)
class Setting:
    """One configurable value: its file key, its variable and/or the command option it feeds."""

    key: str  # "model", "batch.parallelism", ...
    env: str | None = None
    command: str | None = None  # the option's command ("batch"), named like the key's tail
    secret: bool = False


#: Every setting ``config`` shows, in display order.
SETTINGS: tuple[Setting, ...] = (
    Setting("provider", env="MODEL_PROVIDER"),
    Setting("model", env="MODEL_NAME"),
    Setting("reasoning", env="MODEL_REASONING"),
    Setting("temperature", env="OPENAI_TEMPERATURE"),
    Setting("max_tokens", env="OPENAI_MAX_TOKENS"),
    Setting("timeout", env="LITELLM_TIMEOUT"),
    Setting("retries", env="LITELLM_NUM_RETRIES"),
    Setting("empty_retries", env="LITELLM_APP_RETRIES"),
    *(
        Setting(f"batch.{name}", command="batch")
        for name in ("input_dir", "output_dir", "recursive", "parallelism", "max_cost")
    ),
    Setting("batch.time_budget", command="batch"),
    Setting("explore.producers", command="explore"),
    Setting("explore.routing_strategy", env="ROUTING_STRATEGY", command="explore"),
    Setting("explore.routing_config", env="ROUTING_CONFIG", command="explore"),
    Setting("explore.similarity", command="explore"),
    Setting("tracing.mlflow", env="LITELLM_MLFLOW_ENABLED"),
    Setting("tracing.mlflow_tracking_uri", env="MLFLOW_TRACKING_URI"),
    Setting("tracing.mlflow_experiment", env="MLFLOW_EXPERIMENT_NAME"),
    Setting("tracing.otel", env="LITELLM_OTEL_ENABLED"),
    Setting("tracing.otel_endpoint", env="TRACELOOP_BASE_URL"),
    Setting("tracing.service_name", env="OTEL_SERVICE_NAME"),
    Setting("tracing.content", env="LLM_CONDUCTOR_TRACE_CONTENT"),
    *(
        Setting(f"key.{name}", env=name, secret=True)
        for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
    ),
)


def find_config(folder: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The configuration in ``folder`` (default: the current one): ``llm-conductor.toml``,
    else ``pyproject.toml``'s ``[tool.llm-conductor]``; None when neither exists."""
    here = folder or Path.cwd()
    own = here / CONFIG_FILE
    if own.is_file():
        return own, _read_toml(own)
    pyproject = here / "pyproject.toml"
    if pyproject.is_file():
        section = _read_toml(pyproject).get("tool", {}).get("llm-conductor")
        if isinstance(section, dict):
            return pyproject, section
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None


def load(folder: Path | None = None) -> tuple[Path | None, ProjectConfig]:
    """The validated configuration and its file (None and all-empty without one)."""
    found = find_config(folder)
    if found is None:
        return None, ProjectConfig()
    path, data = found
    try:
        return path, ProjectConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"{path}: {where}: {first['msg']}") from None


def file_value(config: ProjectConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part, None)
    return value


def _as_env(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


#: Variables ``apply`` set from the file in this process (``config`` tells them from the
#: user's own environment).
filled_from_file: set[str] = set()


def apply(config: ProjectConfig) -> dict[str, dict[str, Any]]:
    """Make the file's values defaults: unset variables get the file's value; returns the
    ``default_map`` for the commands' options (command -> option -> value)."""
    default_map: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        value = None if setting.secret else file_value(config, setting.key)
        if value is None:
            continue
        if setting.env and setting.env not in os.environ:
            os.environ[setting.env] = _as_env(value)
            filled_from_file.add(setting.env)
        if setting.command:
            default_map.setdefault(setting.command, {})[setting.key.split(".")[-1]] = value
    return default_map


def source_of(setting: Setting, config: ProjectConfig, path: Path | None) -> tuple[Any, str]:
    """(value, where it came from) of ``setting`` as a command would see it without flags:
    "env NAME", "file PATH" or "built-in" (value None: the code's own default applies)."""
    if setting.env and setting.env in os.environ and setting.env not in filled_from_file:
        return os.environ[setting.env], f"env {setting.env}"
    if setting.secret:
        return None, "not set"
    value = file_value(config, setting.key)
    if value is not None:
        return value, f"file {path}"
    return None, "built-in"
