"""Prompt discovery, naming, --files-from lists and prompt decoding (tasks/prompt_files.py)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from blocks.errors import PromptFileError, UsageError
from tasks.prompt_files import (
    AUTO,
    MissingPromptFile,
    PromptFile,
    decode_prompt,
    discover_prompts,
    prompts_from_list,
    read_prompt,
)


def make(root: Path, *names: str, text: str = "Say hi") -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def rels(prompts: list[PromptFile]) -> list[str]:
    return [str(p.relative) for p in prompts]


def messages(problems: list[PromptFileError]) -> list[str]:
    return [str(p) for p in problems]


# Naming


@pytest.mark.parametrize(
    ("name", "fmt", "json_output", "text_output"),
    [
        ("Table_Rules.json.prompt.md", "json", "Table_Rules.json", "Table_Rules.json"),
        ("Table_Summary.md.prompt.md", "md", "Table_Summary.md", "Table_Summary.md"),
        ("notes.txt.prompt.md", "txt", "notes.txt", "notes.txt"),
        ("config.yaml.prompt.md", "yaml", "config.yaml", "config.yaml"),
        ("rows.csv.prompt.md", "csv", "rows.csv", "rows.csv"),
        ("page.html.prompt.md", "html", "page.html", "page.html"),
        ("script.py.prompt.md", "py", "script.py", "script.py"),
        ("Mixed.JSON.prompt.md", "json", "Mixed.JSON", "Mixed.JSON"),  # case kept in the name
        ("task1.prompt.md", None, "task1.json", "task1.md"),
        # Not formats: digits only (a date or version), or longer than 10 characters.
        ("notes.2024.prompt.md", None, "notes.2024.json", "notes.2024.md"),
        ("a.verylongext1.prompt.md", None, "a.verylongext1.json", "a.verylongext1.md"),
        # No name before the extension: the seed read ".json" as the name.
        (".json.prompt.md", None, ".json.json", ".json.md"),
    ],
)
def test_name_decides_format_and_output(
    tmp_path: Path, name: str, fmt: str | None, json_output: str, text_output: str
) -> None:
    make(tmp_path, name)
    [prompt], problems = discover_prompts(tmp_path)
    assert problems == []
    assert prompt.explicit_format == fmt
    assert prompt.output_format == (fmt or AUTO)
    out = tmp_path / "out"
    assert prompt.output_path(out, is_json=True) == out / json_output
    assert prompt.output_path(out, is_json=False) == out / text_output


def test_nested_folders_are_kept_below_the_output_dir(tmp_path: Path) -> None:
    make(tmp_path, "summary/Table_Summary.md.prompt.md", "relationship/deep/rel.prompt.md")
    prompts, problems = discover_prompts(tmp_path, recursive=True)
    assert problems == []
    by_rel = {str(p.relative): p for p in prompts}
    summary = by_rel["summary/Table_Summary.md.prompt.md"]
    auto = by_rel["relationship/deep/rel.prompt.md"]
    out = tmp_path / "out"
    assert summary.path == tmp_path.resolve() / "summary/Table_Summary.md.prompt.md"
    assert summary.path.is_absolute()
    assert summary.relative == PurePosixPath("summary/Table_Summary.md.prompt.md")
    assert summary.output_path(out, is_json=True) == out / "summary/Table_Summary.md"
    assert summary.output_stem == PurePosixPath("summary/Table_Summary")
    assert auto.output_path(out, is_json=True) == out / "relationship/deep/rel.json"
    assert auto.output_path(out, is_json=False) == out / "relationship/deep/rel.md"
    assert auto.output_stem == PurePosixPath("relationship/deep/rel")
    assert auto.possible_outputs() == (
        PurePosixPath("relationship/deep/rel.json"),
        PurePosixPath("relationship/deep/rel.md"),
    )


def test_a_file_named_only_prompt_md_is_a_problem(tmp_path: Path) -> None:
    make(tmp_path, ".prompt.md", "ok.prompt.md")
    prompts, problems = discover_prompts(tmp_path)
    assert rels(prompts) == ["ok.prompt.md"]
    assert messages(problems) == [".prompt.md: no name before .prompt.md"]


# Discovery


def test_non_recursive_scans_the_top_level_only(tmp_path: Path) -> None:
    make(tmp_path, "task1.prompt.md", "task2.prompt.md", "subfolder/task3.prompt.md")
    make(tmp_path, "notes.md", "readme.txt", "x.prompt.md.bak")
    prompts, problems = discover_prompts(tmp_path, recursive=False)
    assert rels(prompts) == ["task1.prompt.md", "task2.prompt.md"]
    assert problems == []


def test_recursive_scans_subfolders_sorted_folder_by_folder(tmp_path: Path) -> None:
    make(tmp_path, "b.prompt.md", "a.b.prompt.md", "a/z.prompt.md", "a/b/c.prompt.md")
    make(tmp_path, "A.prompt.md", "a/a.prompt.md")
    prompts, _ = discover_prompts(tmp_path, recursive=True)
    assert rels(prompts) == [
        "A.prompt.md",
        "a/a.prompt.md",
        "a/b/c.prompt.md",
        "a/z.prompt.md",
        "a.b.prompt.md",
        "b.prompt.md",
    ]
    # Deterministic whatever the directory order.
    assert rels(discover_prompts(tmp_path, recursive=True)[0]) == rels(prompts)


def test_hidden_folders_are_not_entered(tmp_path: Path) -> None:
    make(tmp_path, ".git/x.prompt.md", ".llm-conductor/y.prompt.md", ".hidden.prompt.md")
    make(tmp_path, "sub/.venv/z.prompt.md", "sub/ok.prompt.md")
    prompts, problems = discover_prompts(tmp_path, recursive=True)
    # Hidden files are prompts like any other (the seed's glob matched them).
    assert rels(prompts) == [".hidden.prompt.md", "sub/ok.prompt.md"]
    assert problems == []


def test_missing_input_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"input dir .*nope does not exist"):
        discover_prompts(tmp_path / "nope")


def test_input_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    make(tmp_path, "file.prompt.md")
    with pytest.raises(UsageError, match="is not a directory"):
        discover_prompts(tmp_path / "file.prompt.md", recursive=True)


def test_input_dir_given_through_a_symlink(tmp_path: Path) -> None:
    make(tmp_path / "real", "a.prompt.md")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    prompts, problems = discover_prompts(tmp_path / "link")
    assert rels(prompts) == ["a.prompt.md"] and problems == []


def test_symlinked_file_leading_outside_is_reported_not_followed(tmp_path: Path) -> None:
    inputs, outside = tmp_path / "in", tmp_path / "outside"
    make(inputs, "good.prompt.md")
    make(outside, "secret.prompt.md")
    (inputs / "evil.prompt.md").symlink_to(outside / "secret.prompt.md")
    (inputs / "unrelated.txt").symlink_to(outside / "secret.prompt.md")  # not a prompt: ignored
    prompts, problems = discover_prompts(inputs)
    assert rels(prompts) == ["good.prompt.md"]
    assert len(problems) == 1
    assert str(problems[0]).startswith("evil.prompt.md: symlink resolves outside the input dir")


def test_symlinked_folder_leading_outside_is_reported_not_followed(tmp_path: Path) -> None:
    inputs, outside = tmp_path / "in", tmp_path / "outside"
    make(inputs, "good.prompt.md")
    make(outside, "secret.prompt.md")
    (inputs / "escape").symlink_to(outside)
    prompts, problems = discover_prompts(inputs, recursive=True)
    assert rels(prompts) == ["good.prompt.md"]
    assert len(problems) == 1
    assert str(problems[0]).startswith("escape: symlink resolves outside the input dir")
    # Not scanned at all without --recursive, so nothing to report.
    assert discover_prompts(inputs, recursive=False)[1] == []


def test_symlinks_inside_the_input_dir_are_followed_and_cycles_end(tmp_path: Path) -> None:
    make(tmp_path, "real/a.prompt.md", "b.prompt.md")
    (tmp_path / "alias.prompt.md").symlink_to(tmp_path / "b.prompt.md")
    (tmp_path / "real" / "loop").symlink_to(tmp_path)  # a cycle back to the root
    (tmp_path / "again").symlink_to(tmp_path / "real")  # the same folder twice
    prompts, problems = discover_prompts(tmp_path, recursive=True)
    assert problems == []
    assert rels(prompts) == ["again/a.prompt.md", "alias.prompt.md", "b.prompt.md"]
    assert read_prompt(prompts[1])[1] == "Say hi"


def test_broken_symlink_and_special_files_are_problems(tmp_path: Path) -> None:
    make(tmp_path, "ok.prompt.md")
    (tmp_path / "broken.prompt.md").symlink_to(tmp_path / "missing.prompt.md")
    os.mkfifo(tmp_path / "pipe.prompt.md")  # reading it would block forever
    (tmp_path / "dir.prompt.md").mkdir()
    prompts, problems = discover_prompts(tmp_path)
    assert rels(prompts) == ["ok.prompt.md"]
    assert messages(problems) == [
        "broken.prompt.md: broken symlink",
        "pipe.prompt.md: not a regular file",
    ]


def test_unreadable_subfolder_is_a_problem_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path, "ok.prompt.md", "locked/x.prompt.md")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # chmod 0 does not stop root, so refuse by hand
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    prompts, problems = discover_prompts(tmp_path, recursive=True)
    assert rels(prompts) == ["ok.prompt.md"]
    assert messages(problems) == ["locked: cannot read folder: Permission denied"]


def test_prompts_that_would_write_the_same_output_are_problems(tmp_path: Path) -> None:
    # "a.prompt.md" may write a.md, which "a.md.prompt.md" writes too; the first one wins.
    make(tmp_path, "a.prompt.md", "a.md.prompt.md", "B.json.prompt.md", "b.prompt.md")
    make(tmp_path, "c.prompt.md.prompt.md", "c.prompt.md")
    prompts, problems = discover_prompts(tmp_path)
    assert rels(prompts) == ["B.json.prompt.md", "a.md.prompt.md", "c.prompt.md"]
    assert messages(problems) == [
        "a.prompt.md: its output a.md is also the output of a.md.prompt.md; rename one of them",
        # Compared case-folded: one file on macOS and Windows.
        "b.prompt.md: its output b.json is also the output of B.json.prompt.md; rename one of them",
        # Would overwrite a prompt when the output dir is the input dir.
        "c.prompt.md.prompt.md: its output c.prompt.md is a prompt file; rename one of them",
    ]


def test_ten_thousand_files_in_a_hundred_folders_are_all_found(tmp_path: Path) -> None:
    # How fast: bench/batch_bench.py's no-op rerun (10k prompts) measures the scan.
    for i in range(100):
        folder = tmp_path / f"d{i:02}"
        folder.mkdir()
        for j in range(50):
            (folder / f"p{j}.json.prompt.md").touch()
    for j in range(5000):
        (tmp_path / f"t{j}.prompt.md").touch()
    prompts, problems = discover_prompts(tmp_path, recursive=True)
    assert len(prompts) == 10_000 and problems == []
    assert len({p.relative for p in prompts}) == 10_000


# --files-from


def test_files_from_ignores_blanks_and_comments_and_keeps_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path, "prompts/b.prompt.md", "prompts/sub/a.json.prompt.md")
    monkeypatch.chdir(tmp_path)
    lines = [
        "# chosen by hand\n",
        "\n",
        "   \n",
        "prompts/b.prompt.md\n",  # relative to the current directory
        f"  {tmp_path / 'prompts/sub/a.json.prompt.md'}  \r\n",  # absolute, padded, CRLF
    ]
    prompts, problems = prompts_from_list(lines, Path("prompts"))
    assert problems == []
    assert rels(prompts) == ["b.prompt.md", "sub/a.json.prompt.md"]
    assert prompts[1].explicit_format == "json"
    assert prompts[1].path == tmp_path.resolve() / "prompts/sub/a.json.prompt.md"
    assert read_prompt(prompts[0])[1] == "Say hi"


def test_files_from_collapses_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path, "in/a.prompt.md")
    monkeypatch.chdir(tmp_path)
    lines = [
        "in/a.prompt.md",
        "./in/a.prompt.md",
        str(tmp_path / "in/a.prompt.md"),
        "in/../in/a.prompt.md",
    ]
    prompts, problems = prompts_from_list(lines, tmp_path / "in")
    assert rels(prompts) == ["a.prompt.md"] and problems == []


def test_files_from_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path, "in/ok.prompt.md", "in/notes.md", "elsewhere/x.prompt.md")
    (tmp_path / "in/link.prompt.md").symlink_to(tmp_path / "elsewhere/x.prompt.md")
    (tmp_path / "in/folder.prompt.md").mkdir()
    monkeypatch.chdir(tmp_path)
    lines = [
        "in/notes.md",
        "in/missing.prompt.md",
        "elsewhere/x.prompt.md",
        "in/link.prompt.md",
        "in/folder.prompt.md",
        "in/ok.prompt.md",
    ]
    prompts, problems = prompts_from_list(lines, Path("in"))
    assert rels(prompts) == ["ok.prompt.md"]
    assert messages(problems) == [
        "in/notes.md: not a *.prompt.md file",
        "in/missing.prompt.md: no such file",
        "elsewhere/x.prompt.md: outside the input dir in",
        "in/link.prompt.md: outside the input dir in",  # a symlink leading out
        "in/folder.prompt.md: not a regular file",
    ]


def test_files_from_lines_relative_to_the_input_dir_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's rule (relative to --input-dir) and ours (relative to here) both work."""
    make(tmp_path, "prompts/a.prompt.md", "prompts/sub/b.json.prompt.md", "c.prompt.md")
    monkeypatch.chdir(tmp_path)
    lines = [
        "sub/b.json.prompt.md",  # relative to the input dir
        "prompts/a.prompt.md",  # relative to the current directory
        "a.prompt.md",  # the same file, relative to the input dir
        "c.prompt.md",  # here, outside the input dir; not inside it either
    ]
    prompts, problems = prompts_from_list(lines, Path("prompts"))
    assert rels(prompts) == ["sub/b.json.prompt.md", "a.prompt.md"]
    assert messages(problems) == ["c.prompt.md: outside the input dir prompts"]


def test_files_from_a_listed_file_that_is_gone_is_only_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path, "prompts/a.prompt.md")
    monkeypatch.chdir(tmp_path)
    prompts, problems = prompts_from_list(
        ["prompts/deleted.prompt.md", "gone.prompt.md", "a.prompt.md"], Path("prompts")
    )
    assert rels(prompts) == ["a.prompt.md"]
    assert [type(p) for p in problems] == [MissingPromptFile, MissingPromptFile]
    assert messages(problems) == [
        "prompts/deleted.prompt.md: no such file",
        "gone.prompt.md: no such file",
    ]


def test_files_from_through_a_symlinked_input_dir(tmp_path: Path) -> None:
    make(tmp_path, "real/sub/a.prompt.md")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for listed, input_dir in [("link/sub/a.prompt.md", "real"), ("real/sub/a.prompt.md", "link")]:
        prompts, problems = prompts_from_list([str(tmp_path / listed)], tmp_path / input_dir)
        assert rels(prompts) == ["sub/a.prompt.md"] and problems == []


def test_files_from_reports_collisions(tmp_path: Path) -> None:
    make(tmp_path, "a.prompt.md", "a.md.prompt.md")
    lines = [str(tmp_path / "a.prompt.md"), str(tmp_path / "a.md.prompt.md")]
    prompts, problems = prompts_from_list(lines, tmp_path)
    assert rels(prompts) == ["a.prompt.md"]
    assert messages(problems) == [
        "a.md.prompt.md: its output a.md is also the output of a.prompt.md; rename one of them"
    ]


def test_files_from_missing_input_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        prompts_from_list(["x.prompt.md"], tmp_path / "nope")


# Reading


def prompt_with(tmp_path: Path, data: bytes, name: str = "p.prompt.md") -> PromptFile:
    (tmp_path / name).write_bytes(data)
    [prompt], _ = discover_prompts(tmp_path)
    return prompt


def test_read_prompt_returns_bytes_and_text(tmp_path: Path) -> None:
    data = "Résumé: {name}\r\n  \n".encode()
    assert read_prompt(prompt_with(tmp_path, data)) == (data, "Résumé: {name}\r\n  \n")


def test_bom_is_stripped_from_the_text_but_not_the_bytes(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfHello"
    assert read_prompt(prompt_with(tmp_path, data)) == (data, "Hello")


@pytest.mark.parametrize("data", [b"", b" \n\t\r\n ", b"\xef\xbb\xbf", "\u3000\n".encode()])
def test_empty_or_whitespace_prompt_is_an_error(tmp_path: Path, data: bytes) -> None:
    prompt = prompt_with(tmp_path, data, "sub.md.prompt.md")
    with pytest.raises(PromptFileError) as caught:
        read_prompt(prompt)
    assert str(caught.value) == "sub.md.prompt.md: prompt file is empty"


@pytest.mark.parametrize(
    ("data", "offset", "byte"),
    [
        (b"caf\xe9 au lait", 3, "0xe9"),  # Latin-1
        (b"\xef\xbb\xbfok \xff", 6, "0xff"),  # the offset counts the BOM
        (b"ok " + "é".encode()[:1], 3, "0xc3"),  # cut in the middle of a character
    ],
)
def test_non_utf8_prompt_names_the_byte_offset(
    tmp_path: Path, data: bytes, offset: int, byte: str
) -> None:
    prompt = prompt_with(tmp_path, data)
    with pytest.raises(PromptFileError) as caught:
        read_prompt(prompt)
    assert str(caught.value) == (
        f"p.prompt.md: not valid UTF-8 (byte {byte} at offset {offset}); save the file as UTF-8"
    )


def test_prompt_deleted_after_discovery_is_an_error(tmp_path: Path) -> None:
    prompt = prompt_with(tmp_path, b"hi")
    prompt.path.unlink()
    with pytest.raises(PromptFileError, match=r"^p\.prompt\.md: cannot read: No such file"):
        read_prompt(prompt)


def test_decode_prompt_names_its_source() -> None:
    with pytest.raises(PromptFileError, match="^stdin: prompt file is empty$"):
        decode_prompt(b"\n", "stdin")
    assert decode_prompt(b"\xef\xbb\xbf\xc3\xa9", "stdin") == "é"
