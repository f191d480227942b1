"""Turning an answer into an output file, and reading back which prompt produced it.

Every output records the hash of the prompt run that produced it, in the two conventions of the
seed llm-conductor (so its outputs are recognised and not paid for twice):

* a JSON object gets ``_prompt_hash`` and ``_llm_metadata`` keys; a JSON array stays exactly
  as the model wrote it (its hash lives in the manifest only);
* a text output starts with two comment lines, then a blank line, then the answer::

      <!-- Prompt Hash: 3f2a... -->
      <!-- LLM Metadata: {"provider": "openai", ...} -->

The comment syntax follows the format, so that the file stays valid for its own tools:
``<!-- -->`` for markdown, text, HTML, XML and any extension not listed below (the seed's
choice), ``#`` for Python, shell, YAML, TOML..., ``//`` for JavaScript, C, Go, Rust...,
``--`` for SQL and Lua, ``/* */`` for CSS. CSV, TSV and JSON Lines get no header at all: any
extra line would be read as data, so their hash, like an array's, lives in the manifest only.
A first line that must stay first (``#!`` shebang, ``<?xml`` declaration) stays first, and the
header follows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from blocks.errors import InvalidOutput
from tasks.prompt_files import AUTO

__all__ = ["extract_json", "output_metadata", "read_output_hash", "render_output", "write_atomic"]

_HTML = ("<!-- ", " -->")
# Comment syntax (opening, closing) per extension; any other extension gets ``_HTML``.
_STYLES: tuple[tuple[tuple[str, str] | None, str], ...] = (
    (None, "csv tsv psv jsonl ndjson"),  # any extra line would be read as data
    (
        ("# ", ""),
        "py pyi sh bash zsh fish rb pl pm r jl ps1 yaml yml toml ini cfg conf tf hcl nix mk "
        "cmake ex exs awk tcl properties env dockerfile",
    ),
    (
        ("// ", ""),
        "js mjs cjs jsx ts mts cts tsx c h cc cpp cxx hpp cs java kt kts go rs swift scala "
        "dart groovy gradle proto zig sol jsonc json5",
    ),
    (("-- ", ""), "sql lua hs elm"),
    (("/* ", " */"), "css scss less"),
)
_COMMENTS = {ext: style for style, names in _STYLES for ext in names.split()}
# Lines that lose their meaning when not first.
_PROLOGS = ("#!", "<?xml")
_SAFE_HASH = re.compile(r"[0-9A-Za-z_-]{1,128}")
_HEADER = re.compile(
    rb"(?:<!--|#|//|--|/\*)[ \t]*Prompt Hash:[ \t]*([0-9A-Za-z_-]{1,128})[ \t]*(?:-->|\*/)?\s*"
)
_MAX_HEADER = 4096
_BOM = b"\xef\xbb\xbf"
_PROLOG_BYTES = tuple(p.encode() for p in _PROLOGS)
_OPENERS = re.compile(r"[\[{]")
_BRACKETS = re.compile(r'[\[\]{}"]')
_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*+"', re.DOTALL)
_NON_SPACE = re.compile(r"\S")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_DECODER = json.JSONDecoder()
# Where a known cost came from, in the seed's ``cost_calculation_method`` words.
_COST_METHODS = {"litellm": "litellm_actual", "claude": "cli_reported", "random": "offline"}

if TYPE_CHECKING:
    from blocks.config import ProviderConfig
    from blocks.result import Completion
_NONSTANDARD = "answer's JSON holds NaN, Infinity or a number too large for JSON"
_IN_PROSE = (
    "answer holds JSON only inside its sentences; strict JSON must be the answer, in a "
    "fenced block or on lines of its own"
)


class _Found(NamedTuple):
    value: dict[str, Any] | list[Any]
    start: int
    end: int


class _Fence(NamedTuple):
    info: str  # first word of the info string, lower-case
    start: int  # content
    end: int
    outer_start: int  # opening fence line to closing fence line, both included
    outer_end: int


def extract_json(text: str) -> dict[str, Any] | list[Any]:
    """Return the JSON object or array an answer holds.

    Strict: the JSON must be the answer, not braces that happen to occur in a sentence. The
    first fenced block (```` ```json ```` or a bare ```` ``` ````) whose content is a JSON
    object or array wins. Otherwise the longest object or array set apart from the prose
    does: it starts a line and ends one (whitespace aside), as the whole answer does, so
    lines of prose before and after it are set aside but ``Use {} as a placeholder.`` holds
    no JSON. Broken JSON is never repaired, and a valid piece of a broken document
    (``{"b": 1}`` inside ``{"a": {"b": 1}, oops}``) does not count.

    Raises:
        InvalidOutput: No JSON object or array (bare scalars do not count), only JSON inside
            sentences, or broken JSON; the message is one line without the file's name.
    """
    return _locate(text).value


def output_metadata(completion: Completion, provider: ProviderConfig) -> dict[str, Any]:
    """The ``_llm_metadata`` of an output: ours, plus every key the seed wrote.

    Scripts written for the seed read ``temperature`` (None: the provider's default),
    ``total_tokens``, ``elapsed_seconds``, ``generation_date`` (UTC, ISO 8601: when the answer
    came back), ``generation_id`` (the server's response id), ``cost_usd`` and
    ``cost_calculation_method`` (None, like the cost, when no price is known).
    """
    cost = completion.cost
    return {
        **completion.metadata(),
        "temperature": provider.temperature,
        "total_tokens": completion.usage.total_tokens,
        "elapsed_seconds": round(completion.elapsed, 2),
        "generation_date": datetime.now(UTC).isoformat(),
        "generation_id": completion.response_id,
        "cost_usd": cost,
        "cost_calculation_method": None
        if cost is None
        else _COST_METHODS.get(provider.spec.backend, "provider_reported"),
    }


def render_output(
    answer: str, fmt: str, prompt_hash: str, metadata: Mapping[str, Any]
) -> tuple[str, bool]:
    """Build an output file's text from the model's answer.

    Args:
        answer: The model's full answer.
        fmt: ``"json"``, ``"auto"``, or another extension such as ``"md"`` or ``"py"``.
        prompt_hash: The hash recorded in the output (``prompt_key``), letters, digits, ``_``
            and ``-`` only.
        metadata: One-line facts about the run (provider, model, tokens...), stored next to the
            hash.

    Returns:
        The file's text and whether it is JSON. ``"auto"`` gives JSON only when the whole
        answer is a JSON object or array (bare or alone in one fenced block), and markdown
        otherwise, so that no prose is ever dropped. ``"json"`` keeps only the JSON.

    Raises:
        InvalidOutput: ``fmt`` is ``"json"`` and the answer holds no valid JSON object or array.
        ValueError: ``prompt_hash`` contains characters that could break the header.
    """
    if not _SAFE_HASH.fullmatch(prompt_hash):
        raise ValueError(f"unsafe prompt hash {prompt_hash!r}")
    fmt = fmt.lower()
    found = (
        _locate(answer) if fmt == "json" else _whole_answer_json(answer) if fmt == AUTO else None
    )
    if found is not None:
        return _render_json(answer, found, prompt_hash, metadata), True
    return _render_text(answer, "md" if fmt == AUTO else fmt, prompt_hash, metadata), False


def read_output_hash(path: Path) -> str | None:
    """Return the prompt hash recorded in an existing output, ours or the seed's.

    Text outputs are recognised by their first line (the second after a ``#!`` or ``<?xml``
    line), so a large file costs one short read; only files starting with ``{`` are parsed as
    JSON, for their top-level ``_prompt_hash``.

    Returns:
        The hash, or None when the file is missing, unreadable or records no hash.
    """
    try:
        with open(path, "rb") as f:
            line = f.readline(_MAX_HEADER).removeprefix(_BOM)
            if line.startswith(_PROLOG_BYTES):
                line = f.readline(_MAX_HEADER)
            if match := _HEADER.fullmatch(line):
                return match.group(1).decode("ascii")
            if not line.lstrip().startswith(b"{"):
                return None
            f.seek(0)
            data = json.loads(f.read().removeprefix(_BOM))
    except (OSError, ValueError, RecursionError):
        return None
    value = data.get("_prompt_hash") if isinstance(data, dict) else None
    return value if isinstance(value, str) and _SAFE_HASH.fullmatch(value) else None


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) in one step.

    Readers see the old file or the new one, never a mix; if anything fails, the old content
    is untouched and no temporary file is left behind. Parent folders are created. The new
    file gets the default permissions (umask), not those of the file it replaces.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())  # else a crash after the rename can leave an empty file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temp(path: Path) -> tuple[Path, int]:
    # Same folder so that os.replace never crosses file systems; mode 0o666 lets the umask
    # decide, as a plain open() would (mkstemp would make every output 0600).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _render_json(answer: str, found: _Found, prompt_hash: str, metadata: Mapping[str, Any]) -> str:
    value = found.value
    if isinstance(value, list):
        return answer[found.start : found.end] + "\n"
    # Ours go last even when the model already used these keys.
    value = {k: v for k, v in value.items() if k not in ("_prompt_hash", "_llm_metadata")}
    value["_prompt_hash"] = prompt_hash
    value["_llm_metadata"] = dict(metadata)
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def _render_text(answer: str, fmt: str, prompt_hash: str, metadata: Mapping[str, Any]) -> str:
    style = _COMMENTS.get(fmt, _HTML)
    if style is None:
        return answer
    opener, closer = style
    # ensure_ascii escapes every line break, U+2028 included: the header stays one line.
    meta = json.dumps(dict(metadata), ensure_ascii=True, default=str)
    if closer == " -->":
        meta = meta.replace(">", "\\u003e")  # "-->" or "--!>" in a value would end the comment
    elif closer == " */":
        meta = meta.replace("*/", "*\\/")
    header = f"{opener}Prompt Hash: {prompt_hash}{closer}\n{opener}LLM Metadata: {meta}{closer}\n\n"
    if answer.startswith(_PROLOGS):
        first, newline, rest = answer.partition("\n")
        return f"{first}\n{header}{rest}" if newline else f"{first}\n{header}"
    return header + answer


def _require_standard(value: dict[str, Any] | list[Any]) -> None:
    # The decoder accepts NaN and Infinity (and turns 1e400 into inf); strict JSON does not.
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise InvalidOutput(_NONSTANDARD) from exc


def _locate(text: str) -> _Found:
    for fence in _fences(text):
        if fence.info in ("", "json") and (found := _whole(text, fence.start, fence.end)):
            return found
    best: _Found | None = None
    # A value ending before this point lies inside a failed candidate: it is a piece of broken
    # JSON ('{"a": {"b": 1}, oops}', a truncated answer, a Python dict), never the answer.
    broken_until = -1
    worst: tuple[int, json.JSONDecodeError] | None = None  # (extent, error) to report
    in_prose = False  # a valid value was seen, but inside a sentence
    pos = 0
    while match := _OPENERS.search(text, pos):
        start = match.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            # How far the failed candidate reaches: where the parser gave up, or its closing
            # bracket when it has one ("{'a': {...}}" fails at once but spans it all).
            extent = max(exc.pos, _closing(text, start) or 0)
            broken_until = max(broken_until, extent)
            if worst is None or extent - start > worst[0]:
                worst = (extent - start, exc)
            pos = start + 1
            continue
        if end > broken_until:
            if not _on_own_lines(text, start, end):
                in_prose = True
            elif best is None or end - start > best.end - best.start:
                best = _Found(value, start, end)
        pos = end  # anything starting inside a parsed value is shorter than it
    if best is not None:
        _require_standard(best.value)
        return best
    if in_prose:
        raise InvalidOutput(_IN_PROSE)
    if worst is None:
        raise InvalidOutput("answer holds no JSON object or array")
    exc = worst[1]
    raise InvalidOutput(
        f"answer holds no valid JSON object or array: {exc.msg} "
        f"at line {exc.lineno} column {exc.colno}"
    )


def _on_own_lines(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` has nothing but whitespace before it on its first line and
    after it on its last: set apart from the prose, not part of a sentence."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    return (
        not text[line_start:start].strip()
        and not text[end : len(text) if line_end < 0 else line_end].strip()
    )


def _closing(text: str, start: int) -> int | None:
    """The index after the bracket that closes ``text[start]``; None when unbalanced.

    Double-quoted strings are skipped as JSON would; an unterminated one (a quote in prose)
    makes the span unbalanced, so that prose can never hide the JSON after it.
    """
    depth = 0
    pos = start
    while match := _BRACKETS.search(text, pos):
        if match.group() == '"':
            string = _STRING_REST.match(text, match.end())
            if string is None:
                return None
            pos = string.end()
            continue
        depth += 1 if match.group() in "[{" else -1
        pos = match.end()
        if depth == 0:
            return pos
    return None


def _whole_answer_json(text: str) -> _Found | None:
    """The JSON when the answer is nothing else: bare, or alone in one fenced block."""
    found = _whole(text, 0, len(text))
    if found is not None:
        return found
    fences = list(_fences(text))
    if len(fences) != 1:
        return None
    fence = fences[0]
    if fence.info not in ("", "json") or text[: fence.outer_start].strip():
        return None
    if text[fence.outer_end :].strip():
        return None
    return _whole(text, fence.start, fence.end)


def _whole(text: str, start: int, end: int) -> _Found | None:
    """The object or array that is all of ``text[start:end]`` but whitespace, if any."""
    match = _NON_SPACE.search(text, start, end)
    if match is None or match.group() not in "[{":
        return None
    first = match.start()
    try:
        value, stop = _DECODER.raw_decode(text, first)
    except json.JSONDecodeError:
        return None
    if stop > end or text[stop:end].strip():
        return None
    try:
        _require_standard(value)
    except InvalidOutput:
        return None
    return _Found(value, first, stop)


def _fences(text: str) -> Iterator[_Fence]:
    """The fenced code blocks of a markdown text, in order.

    Line by line, as CommonMark does it: a closing fence uses the opening's character, is at
    least as long and has nothing after it, so a fence inside another block is content.
    """
    pos = 0
    opened: tuple[str, str, int, int] | None = None  # fence, info, outer start, content start
    previous_eol = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _FENCE.fullmatch(body)
        if match is not None:
            fence, rest = match.groups()
            if opened is None:
                if not (fence[0] == "`" and "`" in rest):
                    words = rest.split()
                    opened = (fence, words[0].lower() if words else "", pos, pos + len(line))
            elif fence[0] == opened[0][0] and len(fence) >= len(opened[0]) and not rest.strip():
                _, info, outer_start, start = opened
                # The content stops before the line break that precedes the closing fence.
                end = max(start, pos - previous_eol)
                yield _Fence(info, start, end, outer_start, pos + len(body))
                opened = None
        previous_eol = len(line) - len(body)
        pos += len(line)
