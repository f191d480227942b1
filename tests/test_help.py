"""``llm-conductor --help``: its Environment section is a table, not re-wrapped prose, and
names every variable README's Configuration and Tracing tables document."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app

ROOT = Path(__file__).resolve().parent.parent


def readme_table_variables(heading: str) -> set[str]:
    """Variable names in the first column of the first table after ``heading``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rest = text[text.index(heading) :]
    table = re.search(r"(\n\|.*\|)+", rest)
    assert table, f"no table after {heading}"
    names: set[str] = set()
    for row in table.group(0).strip().splitlines()[2:]:
        first = row.split("|")[1]
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)", first))
    return names


def test_the_environment_section_keeps_one_variable_per_line() -> None:
    result = CliRunner().invoke(app, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    start = lines.index("  Environment (flags win over env):")
    section = lines[start:]
    assert "    MODEL_PROVIDER       default --provider (openai)" in section
    assert "    MODEL_NAME           default --model" in section
    assert "  Tracing (off unless switched on):" in section
    starts = {line.split()[0].split("=")[0].rstrip(",") for line in section if line.strip()}
    documented = readme_table_variables("### Configuration") | readme_table_variables(
        "## Observability"
    )
    documented.discard("TRACELOOP_TRACE_CONTENT")  # README: an alias of the one shown
    assert (
        documented - starts - {"OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"} == set()
    )
    assert (
        "    OPENAI_API_KEY, OPENROUTER_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY   provider keys"
        in section
    )
