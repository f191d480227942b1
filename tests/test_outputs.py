"""JSON extraction, output rendering, hash headers, atomic writes and prompt keys."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from blocks.errors import InvalidOutput
from tasks import outputs
from tasks.keys import prompt_key, seed_hash
from tasks.outputs import extract_json, read_output_hash, render_output, write_atomic

HASH = "3f2a" * 16
META = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 12, "cost": None}


# extract_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  [1, {"b": [2]}]\n', [1, {"b": [2]}]),
        ('Here you go:\n```json\n{"a": 1}\n```\nAnything else?', {"a": 1}),
        ('```JSON\n{"a": 1}\n```', {"a": 1}),
        ("```\n[1, 2]\n```", [1, 2]),
        ('~~~json\n{"a": 1}\n~~~', {"a": 1}),
        ('```json\r\n{"a": 1}\r\n```\r\n', {"a": 1}),
        # Lines of prose, with braces, before and after the JSON's own lines are set aside.
        ('Use {name} and [this]:\n  {"a": {"b": [1, 2]}}  \nthen {x} or [y', {"a": {"b": [1, 2]}}),
        ('The "{" key starts here:\n{"a": 1}', {"a": 1}),
        (
            "Here is the JSON you asked for:\n\n"
            '{\n  "city": "Paris",\n  "rivers": ["Seine"]\n}\n\n'
            "Let me know if you need {anything} else!",
            {"city": "Paris", "rivers": ["Seine"]},
        ),
        # The longest value set apart wins over shorter ones, and over any inside a sentence.
        ('See [1] and\n{"a": 1, "b": 2}\nnot {"c": 3, "d": 4, "e": 5}', {"a": 1, "b": 2}),
        ('[1]\nand then\n{"a": 1, "b": 2}', {"a": 1, "b": 2}),
        # Nested deeply, with braces inside strings.
        ('x\n{"a": {"b": {"c": "}{]["}}}\ny', {"a": {"b": {"c": "}{]["}}}),
        ("[]", []),
        ("Nothing matched, so the result is empty:\n{}\n", {}),
    ],
)
def test_extract_json_finds_the_value(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_first_fenced_json_block_wins_over_longer_json_in_prose() -> None:
    text = 'Before: {"long": "x", "longer": "y"}\n```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```'
    assert extract_json(text) == {"a": 1}


def test_fenced_block_of_another_language_is_not_mistaken_for_json() -> None:
    # A naive fence regex pairs the python block's closing fence with the json block's opening.
    text = 'Code:\n```python\nx = {}\n```\nAnd the data:\n```json\n{"a": 1}\n```\n'
    assert extract_json(text) == {"a": 1}


def test_unparsable_fenced_block_falls_back_to_the_text() -> None:
    text = '```json\n{oops}\n```\nBut really:\n{"a": 1}'
    assert extract_json(text) == {"a": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Just prose.", "answer holds no JSON object or array"),
        ("42", "answer holds no JSON object or array"),
        ('"a string"', "answer holds no JSON object or array"),
        (
            "use {name} here",
            "answer holds no valid JSON object or array: Expecting property name enclosed in "
            "double quotes at line 1 column 6",
        ),
        (
            'Result:\n{"a": 1,}',
            "answer holds no valid JSON object or array: Expecting property name enclosed in "
            "double quotes at line 2 column 9",
        ),
        ('{"a": NaN}', "answer's JSON holds NaN, Infinity or a number too large for JSON"),
        ("[1e999]", "answer's JSON holds NaN, Infinity or a number too large for JSON"),
    ],
)
def test_extract_json_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidOutput) as caught:
        extract_json(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "text",
    [
        # What small models answer when they cannot or will not give the JSON.
        "I couldn't find any matching records, so the result is {} for now.",
        "Sure! Use {} as the placeholder and fill in the keys later.",
        "I'm sorry, but I can't help with that request. {}",
        'The schema is {"type": "object"} but I cannot fill it without the data.',
        'Options ["a" or "b"]. Result {"k": [1]}.',
        'Inline: ```json {"a": 1}```',
        "Here you go: []",
    ],
)
def test_json_inside_a_sentence_is_not_the_answer(text: str) -> None:
    """Strict JSON is the answer itself, not braces that occur in a sentence."""
    with pytest.raises(InvalidOutput, match="^answer holds JSON only inside its sentences"):
        extract_json(text)
    with pytest.raises(InvalidOutput):
        render_output(text, "json", HASH, META)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": {"b": 1}, oops}',  # broken outside a valid inner object
        '{"items": [{"a": 1}, {"a": 2}, {"a"',  # cut off (finish_reason="length")
        '```json\n[{"a": 1}, {"a": 2},\n```',
        "{'a': 1, 'b': {\"c\": 2}}",  # a Python dict: fails at once, yet spans the inner one
        '{\n  // a comment\n  "a": {"b": 1}\n}',
        '{name: "x", items: [1, 2]}',  # a JavaScript object
        '```json\n{"a": [1, 2], "b": 3,}\n```',
    ],
)
def test_a_valid_piece_of_broken_json_is_not_returned(text: str) -> None:
    with pytest.raises(
        InvalidOutput,
        match=r"^answer holds no valid JSON object or array: .* at line \d+ column \d+$",
    ):
        extract_json(text)


# render_output: JSON


def test_json_object_gets_hash_and_metadata_last() -> None:
    answer = 'Sure!\n```json\n{"name": "Zoë", "_prompt_hash": "model made this up"}\n```'
    text, is_json = render_output(answer, "json", HASH, META)
    assert is_json
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert '"Zoë"' in text  # ensure_ascii=False
    assert (
        text
        == json.dumps(
            {"name": "Zoë", "_prompt_hash": HASH, "_llm_metadata": META},
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    assert list(json.loads(text)) == ["name", "_prompt_hash", "_llm_metadata"]


def test_json_array_is_written_exactly_as_the_model_wrote_it() -> None:
    answer = 'Here:\n```json\n[ {"b":1},\n  {"a" : "\\u00e9"} ]\n```'
    text, is_json = render_output(answer, "json", HASH, META)
    assert (text, is_json) == ('[ {"b":1},\n  {"a" : "\\u00e9"} ]\n', True)


def test_json_format_with_invalid_answer_raises() -> None:
    with pytest.raises(InvalidOutput):
        render_output("I cannot do that.", "json", HASH, META)


# render_output: auto


@pytest.mark.parametrize(
    "answer",
    ['{"a": 1}', '\n  {"a": 1}  \n', '```json\n{"a": 1}\n```', '```\n{"a": 1}\n```\n'],
)
def test_auto_is_json_when_the_whole_answer_is_json(answer: str) -> None:
    text, is_json = render_output(answer, "auto", HASH, META)
    assert is_json and json.loads(text)["a"] == 1 and json.loads(text)["_prompt_hash"] == HASH


@pytest.mark.parametrize(
    "answer",
    [
        "# Title\n\nSome prose with {braces}.",
        'Here is the data:\n```json\n{"a": 1}\n```',  # the prose would be lost in a .json
        '```json\n{"a": 1}\n```\nNote: I assumed UTC.',
        '```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```',
        '```python\n{"a": 1}\n```',
        '{"a": NaN}',
        "42",
    ],
)
def test_auto_is_markdown_otherwise_and_keeps_the_whole_answer(answer: str) -> None:
    text, is_json = render_output(answer, "auto", HASH, META)
    assert not is_json
    assert text.startswith(f"<!-- Prompt Hash: {HASH} -->\n<!-- LLM Metadata: ")
    assert text.endswith("-->\n\n" + answer)


# render_output: text formats


def header_lines(text: str) -> list[str]:
    return text.split("\n")[:3]


def test_markdown_header_is_the_seed_format() -> None:
    text, is_json = render_output("# Title\nBody", "md", HASH, META)
    assert not is_json
    assert text == (
        f"<!-- Prompt Hash: {HASH} -->\n<!-- LLM Metadata: {json.dumps(META)} -->\n\n# Title\nBody"
    )


def test_metadata_cannot_end_the_comment_early() -> None:
    meta = {"model": "evil-->model", "note": "--!> too", "nl": "a\nb\u2028c"}
    text, _ = render_output("Body", "md", HASH, meta)
    first, second, blank = header_lines(text)
    assert blank == ""
    assert second.startswith("<!-- LLM Metadata: ") and second.endswith(" -->")
    body = second.removeprefix("<!-- LLM Metadata: ").removesuffix(" -->")
    assert ">" not in body  # neither "-->" nor "--!>" can appear
    assert json.loads(body) == meta  # and the metadata reads back unchanged
    assert len(text.splitlines()) == 4


@pytest.mark.parametrize(
    ("fmt", "opener", "closer"),
    [
        ("md", "<!-- ", " -->"),
        ("txt", "<!-- ", " -->"),
        ("html", "<!-- ", " -->"),
        ("unknownfmt", "<!-- ", " -->"),
        ("py", "# ", ""),
        ("yaml", "# ", ""),
        ("toml", "# ", ""),
        ("ts", "// ", ""),
        ("go", "// ", ""),
        ("sql", "-- ", ""),
        ("css", "/* ", " */"),
    ],
)
def test_header_uses_the_formats_comment_syntax(fmt: str, opener: str, closer: str) -> None:
    text, is_json = render_output("body\n", fmt, HASH, {"model": "m"})
    assert not is_json
    assert header_lines(text) == [
        f"{opener}Prompt Hash: {HASH}{closer}",
        f'{opener}LLM Metadata: {{"model": "m"}}{closer}',
        "",
    ]
    assert text.endswith("\n\nbody\n")


def test_css_metadata_cannot_end_the_comment_early() -> None:
    text, _ = render_output("a {}", "css", HASH, {"model": "x*/y"})
    second = header_lines(text)[1]
    assert second.count("*/") == 1 and second.endswith(" */")
    assert json.loads(second.removeprefix("/* LLM Metadata: ").removesuffix(" */")) == {
        "model": "x*/y"
    }


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_data_formats_get_no_header(fmt: str) -> None:
    answer = "a,b\n1,2\n"
    assert render_output(answer, fmt, HASH, META) == (answer, False)


@pytest.mark.parametrize(
    ("fmt", "answer", "first"),
    [
        ("py", "#!/usr/bin/env python3\nprint('hi')\n", "#!/usr/bin/env python3"),
        ("sh", "#!/bin/sh", "#!/bin/sh"),
        ("xml", '<?xml version="1.0"?>\n<a/>\n', '<?xml version="1.0"?>'),
    ],
)
def test_a_line_that_must_stay_first_stays_first(fmt: str, answer: str, first: str) -> None:
    text, _ = render_output(answer, fmt, HASH, META)
    lines = text.split("\n")
    assert lines[0] == first
    assert "Prompt Hash: " + HASH in lines[1]
    assert text.replace(lines[1] + "\n" + lines[2] + "\n\n", "") == answer + (
        "" if "\n" in answer else "\n"
    )


@pytest.mark.parametrize("bad", ["", "abc -->", "a\nb", "x" * 129])
def test_unsafe_hash_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unsafe prompt hash"):
        render_output("x", "md", bad, META)


# read_output_hash


@pytest.mark.parametrize(
    ("fmt", "answer"),
    [
        ("json", '{"a": 1}'),
        ("auto", '{"a": 1}'),
        ("auto", "plain prose"),
        ("md", "# Doc"),
        ("txt", ""),
        ("html", "<p>x</p>"),
        ("py", "#!/usr/bin/env python3\nprint(1)\n"),
        ("yaml", "a: 1\n"),
        ("js", "let a = {};"),
        ("sql", "select 1;"),
        ("css", "a {}"),
        ("xml", '<?xml version="1.0"?>\n<a/>'),
    ],
)
def test_hash_round_trips_through_the_file(tmp_path: Path, fmt: str, answer: str) -> None:
    text, _ = render_output(answer, fmt, HASH, META)
    path = tmp_path / "out"
    write_atomic(path, text)
    assert read_output_hash(path) == HASH


@pytest.mark.parametrize(("fmt", "answer"), [("json", "[1, 2]"), ("csv", "a,b\n")])
def test_outputs_without_a_header_have_no_hash(tmp_path: Path, fmt: str, answer: str) -> None:
    path = tmp_path / "out"
    write_atomic(path, render_output(answer, fmt, HASH, META)[0])
    assert read_output_hash(path) is None


def seed_metadata() -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4",
        "temperature": 0.2,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "elapsed_seconds": 1.23,
        "generation_date": "2025-01-01T00:00:00+00:00",
        "generation_id": None,
        "cost_usd": None,
        "cost_calculation_method": None,
    }


def test_seed_markdown_output_is_recognised(tmp_path: Path) -> None:
    prompt = b"Summarise the table.\n"
    expected = hashlib.sha256(prompt).hexdigest()
    assert seed_hash(prompt) == expected
    path = tmp_path / "Table_Summary.md"
    # What the seed's write_output_file wrote, byte for byte.
    path.write_text(
        f"<!-- Prompt Hash: {expected} -->\n"
        f"<!-- LLM Metadata: {json.dumps(seed_metadata())} -->\n"
        "\nThe table holds ..."
    )
    assert read_output_hash(path) == expected
    # The seed's own tests wrote only the hash line.
    path.write_text(f"<!-- Prompt Hash: {expected} -->\n\nExisting content")
    assert read_output_hash(path) == expected


def test_seed_json_output_is_recognised(tmp_path: Path) -> None:
    prompt = b"Give the rules as JSON."
    data = {"rules": ["a", "b"], "_prompt_hash": seed_hash(prompt)}
    data["_llm_metadata"] = seed_metadata()
    path = tmp_path / "Table_Rules.json"
    with path.open("w") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)  # as the seed did: no final newline
    assert read_output_hash(path) == seed_hash(prompt)


@pytest.mark.parametrize(
    "content",
    [
        b"# Just a markdown file\n",
        b"",
        b'{"no_hash": true}',
        b'{"_prompt_hash": 42}',
        b'{"_prompt_hash": "bad hash -->"}',
        b'{"nested": {"_prompt_hash": "abc"}}',
        b'[{"_prompt_hash": "abc"}]',
        b"{ broken json",
        b"\xff\xfe\x00garbage",
        b"Intro\n<!-- Prompt Hash: abc -->\n",  # only the first line counts
    ],
)
def test_foreign_files_have_no_hash(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign"
    path.write_bytes(content)
    assert read_output_hash(path) is None


def test_missing_or_unreadable_output_has_no_hash(tmp_path: Path) -> None:
    assert read_output_hash(tmp_path / "missing.md") is None
    assert read_output_hash(tmp_path) is None  # a folder


def test_reading_a_large_text_output_reads_only_its_first_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.md"
    text, _ = render_output("x" * 10_000_000, "md", HASH, META)
    path.write_text(text)
    consumed = 0
    real_open = open

    class CountingFile:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> CountingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def __getattr__(self, name: str) -> Any:
            method = getattr(self.f, name)

            def counted(*args: Any) -> Any:
                nonlocal consumed
                result = method(*args)
                if isinstance(result, bytes):
                    consumed += len(result)
                return result

            return counted

    monkeypatch.setattr(outputs, "open", lambda *a: CountingFile(real_open(*a)), raising=False)
    assert read_output_hash(path) == HASH
    assert 0 < consumed < 10_000


# write_atomic


def test_write_atomic_creates_parents_and_writes_text_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.md"
    write_atomic(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert os.listdir(path.parent) == ["out.md"]


def test_write_atomic_follows_the_umask_like_a_plain_open(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.md").stat().st_mode) == 0o644


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "out.json"
    path.write_text("old content")

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new content")
    monkeypatch.undo()
    assert path.read_text() == "old content"
    assert os.listdir(tmp_path) == ["out.json"]


def test_interrupted_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.md"
    path.write_text("old content")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new content")
    monkeypatch.undo()
    assert path.read_text() == "old content"
    assert os.listdir(tmp_path) == ["out.md"]


# Prompt keys


def key(prompt: bytes = b"Say hi", **changes: Any) -> str:
    args: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o",
        "params": {"temperature": 0.2, "max_tokens": 1000},
        "output_format": "json",
    }
    args.update(changes)
    return prompt_key(prompt, **args)


def test_prompt_key_changes_with_everything_that_shapes_the_answer() -> None:
    keys = {
        key(),
        key(b"Say hi!"),
        key(b"\xef\xbb\xbfSay hi"),  # bytes, not text: a re-encoding counts
        key(provider="openrouter"),
        key(model="gpt-4o-mini"),
        key(params={"temperature": 0.3, "max_tokens": 1000}),
        key(params={"temperature": 0.2, "max_tokens": 1000, "reasoning_effort": "high"}),
        key(output_format="auto"),
        key(output_format="md"),
    }
    assert len(keys) == 9
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)


def test_prompt_key_ignores_what_does_not_change_the_request() -> None:
    assert key() == key(params={"max_tokens": 1000, "temperature": 0.2})  # order
    assert key() == key(params={"temperature": 0.2, "max_tokens": 1000.0})  # 1000 == 1000.0
    assert key() == key(params={"temperature": 0.2, "max_tokens": 1000, "seed": None})
    assert key() == key()


def test_prompt_key_recipe_is_pinned() -> None:
    # Changing the recipe re-runs every user's prompts: it must only change on purpose.
    document = (
        '{"format":"json","model":"gpt-4o","params":{"max_tokens":1000,"temperature":0.2},'
        f'"prompt":"{seed_hash(b"Say hi")}","provider":"openai","v":1}}'
    )
    assert key() == hashlib.sha256(document.encode()).hexdigest()


def test_seed_hash_is_sha256_of_the_bytes() -> None:
    assert seed_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_output_metadata_says_when_no_price_is_known() -> None:
    from blocks.config import ProviderConfig
    from blocks.result import Completion, Usage
    from tasks.outputs import output_metadata

    completion = Completion(
        text="x", provider="openai-codex", model="gpt-5", usage=Usage(prompt_tokens=3)
    )
    meta = output_metadata(completion, ProviderConfig(kind="openai-codex"))
    assert (meta["cost_usd"], meta["cost_calculation_method"]) == (None, None)
    assert meta["temperature"] is None and meta["total_tokens"] == 3
    assert meta["generation_id"] is None and meta["generation_date"].endswith("+00:00")
