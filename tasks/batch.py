"""Prefect-free logic of the batch job: what to run, and recording what happened.

``plan_batch`` decides, per prompt file, whether its output is up to date. A prompt is
regenerated when its content, provider, model, generation parameters or output format
changed (they all feed ``prompt_key``), never otherwise. An output written by the seed
llm-conductor (its hash is the sha256 of the prompt file's bytes) counts as up to date too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from blocks.config import ProviderConfig
from blocks.errors import PromptFileError, UsageError
from tasks.keys import prompt_key, seed_hash
from tasks.manifest import Entry, Manifest
from tasks.outputs import read_output_hash
from tasks.prompt_files import (
    MissingPromptFile,
    PromptFile,
    discover_prompts,
    prompts_from_list,
    read_prompt,
)

__all__ = ["BatchPlan", "Job", "plan_batch", "select_prompts", "warn_missing"]

logger = logging.getLogger("llm_conductor.batch")


@dataclass(frozen=True)
class Job:
    """One prompt to send. The text is read again when the job runs (memory stays flat)."""

    prompt: PromptFile
    key: str
    output_format: str
    reason: str  # new | changed | forced | failed-before


@dataclass
class BatchPlan:
    jobs: list[Job] = field(default_factory=list)
    up_to_date: list[PromptFile] = field(default_factory=list)
    problems: list[PromptFileError] = field(default_factory=list)
    #: Listed in ``--files-from`` but gone: warned about, neither run nor failed.
    missing: list[MissingPromptFile] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.up_to_date) + len(self.problems)


def warn_missing(plan: BatchPlan) -> None:
    """One warning per listed file that no longer exists (a prompt deleted in the diff)."""
    for missing in plan.missing:
        logger.warning("skipped %s (listed in --files-from, no longer there)", missing)


def select_prompts(
    input_dir: Path, recursive: bool, files_from: Iterable[str] | None
) -> tuple[list[PromptFile], list[PromptFileError]]:
    """The prompt files of the run: an explicit list, or a scan of the input folder."""
    if files_from is not None:
        return prompts_from_list(files_from, input_dir)
    return discover_prompts(input_dir, recursive)


def _is_up_to_date(
    prompt: PromptFile, key: str, seed: str, entry: Entry | None, output_dir: Path
) -> bool:
    if entry is not None and entry.status == "ok" and entry.key == key and entry.output:
        # The manifest vouches for it as long as the file is still there.
        return (output_dir / entry.output).exists()
    return any(
        read_output_hash(output_dir / rel) in (key, seed) for rel in prompt.possible_outputs()
    )


def plan_batch(
    provider: ProviderConfig,
    input_dir: Path,
    output_dir: Path,
    manifest: Manifest,
    *,
    recursive: bool = False,
    files_from: Iterable[str] | None = None,
    force: bool = False,
    retry_errors: bool = False,
) -> BatchPlan:
    """Decide which prompts must run; unreadable prompts become problems, not exceptions."""
    prompts, found_problems = select_prompts(input_dir, recursive, files_from)
    missing = [p for p in found_problems if isinstance(p, MissingPromptFile)]
    problems = [p for p in found_problems if not isinstance(p, MissingPromptFile)]
    if not prompts and not problems and not missing:
        where = "the --files-from list" if files_from is not None else str(input_dir)
        hint = "" if recursive or files_from is not None else " (use -r for subfolders)"
        raise UsageError(f"no *.prompt.md files in {where}{hint}")
    plan = BatchPlan(problems=problems, missing=missing)
    failed_before = manifest.failed() if retry_errors else set()
    params = provider.generation_params()
    for prompt in prompts:
        if retry_errors and str(prompt.relative) not in failed_before:
            plan.up_to_date.append(prompt)
            continue
        try:
            raw, _text = read_prompt(prompt)
        except PromptFileError as error:
            plan.problems.append(error)
            continue
        fmt = prompt.explicit_format or "auto"
        key = prompt_key(
            raw, provider=provider.kind, model=provider.model_name, params=params, output_format=fmt
        )
        entry = manifest.get(str(prompt.relative))
        if force:
            reason = "forced"
        elif _is_up_to_date(prompt, key, seed_hash(raw), entry, output_dir):
            plan.up_to_date.append(prompt)
            continue
        elif retry_errors:
            reason = "failed-before"
        else:
            reason = "new" if entry is None else "changed"
        plan.jobs.append(Job(prompt, key, fmt, reason))
    return plan
