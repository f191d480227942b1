"""Finding and reading prompt files: ``{name}.{ext}.prompt.md`` and ``{name}.prompt.md``.

Naming decides the output (compatible with the seed llm-conductor):

* ``{name}.{ext}.prompt.md`` -> ``{name}.{ext}``: an explicit format; ``ext`` is 1-10 letters
  or digits with at least one letter (``notes.2024.prompt.md`` is an auto prompt named
  ``notes.2024``, not a "2024" format);
* ``{name}.prompt.md`` -> ``{name}.json`` when the answer is a JSON object or array, else
  ``{name}.md``.

Folders below the input dir are kept below the output dir. Nothing here raises for a single bad
file: discovery returns the usable prompts and, separately, one ``PromptFileError`` per file that
cannot be used, so one bad file never stops a batch.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from blocks.errors import PromptFileError, UsageError

__all__ = [
    "AUTO",
    "PROMPT_SUFFIX",
    "MissingPromptFile",
    "PromptFile",
    "decode_prompt",
    "discover_prompts",
    "prompts_from_list",
    "read_prompt",
]

PROMPT_SUFFIX = ".prompt.md"
#: The output format of a ``{name}.prompt.md`` file: JSON or markdown, decided by the answer.
AUTO = "auto"

_FORMAT = re.compile(r"(?=[0-9]*[A-Za-z])[A-Za-z0-9]{1,10}")
_BOM = b"\xef\xbb\xbf"


class MissingPromptFile(PromptFileError):
    """A file named in a ``--files-from`` list that does not exist (e.g. a prompt deleted in
    the diff the list came from): a warning for the batch, not a failure."""


@dataclass(frozen=True)
class PromptFile:
    """One prompt file found below the input dir.

    Attributes:
        path: Absolute path used to read the file.
        relative: Path below the input dir; the prompt's stable id in the manifest.
        explicit_format: Lower-case format from ``{name}.{ext}.prompt.md``; None for auto.
    """

    path: Path
    relative: PurePosixPath
    explicit_format: str | None

    @property
    def output_format(self) -> str:
        """The explicit format, or ``AUTO``."""
        return self.explicit_format or AUTO

    @property
    def output_stem(self) -> PurePosixPath:
        """Output path below the output dir without its extension (``sub/Table_Rules``)."""
        name = self.relative.name.removesuffix(PROMPT_SUFFIX)
        if self.explicit_format is not None:
            name = name[: -len(self.explicit_format) - 1]
        return self.relative.with_name(name)

    def output_relative(self, is_json: bool) -> PurePosixPath:
        """Output path below the output dir; ``is_json`` only matters for auto prompts."""
        names = _output_names(str(self.relative), self.explicit_format)
        return PurePosixPath(names[0] if is_json else names[-1])

    def output_path(self, output_dir: Path, is_json: bool) -> Path:
        """Where the output goes; ``is_json`` only matters for auto prompts."""
        return output_dir.joinpath(*self.output_relative(is_json).parts)

    def possible_outputs(self) -> tuple[PurePosixPath, ...]:
        """Every output this prompt may write: one, or two for auto (``.json`` and ``.md``)."""
        return tuple(map(PurePosixPath, _output_names(str(self.relative), self.explicit_format)))


def discover_prompts(
    input_dir: Path, recursive: bool = False
) -> tuple[list[PromptFile], list[PromptFileError]]:
    """Find the ``*.prompt.md`` files in ``input_dir``, sorted by relative path.

    Only the top level is scanned unless ``recursive``; hidden directories (``.git``,
    ``.venv``, ``.llm-conductor``) are never entered. Symlinks are followed only when they
    resolve inside the input dir; a symlinked directory whose target was already scanned is
    skipped, which also breaks cycles.

    Returns:
        The usable prompts and one problem per file that cannot be used (a symlink leading
        outside the input dir, a non-regular file, an unreadable folder, two prompts that would
        write the same output...).

    Raises:
        UsageError: ``input_dir`` does not exist, is not a directory or cannot be read.
    """
    root = _resolve_input_dir(input_dir)
    root_prefix = _dir_prefix(root)
    found: list[_Candidate] = []
    problems: list[PromptFileError] = []
    visited = {root}
    # (path to scan, its real path, its relative prefix "a/b/" or "")
    pending: list[tuple[str, str, str]] = [(root, root, "")]
    while pending:
        dir_path, dir_real, prefix = pending.pop()
        try:
            with os.scandir(dir_path) as it:
                entries = list(it)
        except OSError as exc:
            if not prefix:
                raise UsageError(f"input dir {input_dir} cannot be read: {exc.strerror}") from exc
            problems.append(
                PromptFileError(f"{prefix.rstrip('/')}: cannot read folder: {exc.strerror}")
            )
            continue
        for entry in entries:
            name = entry.name
            is_prompt = name.endswith(PROMPT_SUFFIX)
            rel = prefix + name
            try:
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not (real == root or real.startswith(root_prefix)):
                        if is_prompt or (recursive and _wanted_dir(name) and os.path.isdir(real)):
                            problems.append(
                                PromptFileError(
                                    f"{rel}: symlink resolves outside the input dir ({real}); "
                                    "not followed"
                                )
                            )
                        continue
                else:
                    real = ""
                if entry.is_dir():
                    real = real or os.path.join(dir_real, name)
                    if recursive and _wanted_dir(name) and real not in visited:
                        visited.add(real)
                        pending.append((entry.path, real, rel + "/"))
                    continue
                if not is_prompt:
                    continue
                if not entry.is_file():
                    kind = "broken symlink" if entry.is_symlink() else "not a regular file"
                    problems.append(PromptFileError(f"{rel}: {kind}"))
                    continue
            except OSError as exc:
                if is_prompt:
                    problems.append(PromptFileError(f"{rel}: cannot read: {exc.strerror}"))
                continue
            _add_candidate(found, problems, rel, entry.path)
    # "\0" sorts before any character of a name: folder by folder, "a/b" before "a.b".
    found.sort(key=lambda candidate: candidate[0].replace("/", "\0"))
    problems.sort(key=str)
    return _finish(found, problems)


def prompts_from_list(
    lines: Iterable[str], input_dir: Path
) -> tuple[list[PromptFile], list[PromptFileError]]:
    """The prompts named in a ``--files-from`` list, in the order given, duplicates collapsed.

    Blank lines and lines starting with ``#`` are ignored, and surrounding whitespace is
    stripped. Paths are absolute, relative to the current directory or relative to
    ``input_dir`` (the seed's rule), and must be ``*.prompt.md`` files inside ``input_dir``
    (after resolving symlinks). A relative path is looked up in the current directory first,
    then in ``input_dir``; the first that exists inside ``input_dir`` wins. A listed file
    that exists nowhere is a ``MissingPromptFile`` problem, which callers treat as a warning.

    Raises:
        UsageError: ``input_dir`` does not exist, is not a directory or cannot be read.
    """
    root = _resolve_input_dir(input_dir)
    roots = (_dir_prefix(os.path.abspath(input_dir)), _dir_prefix(root))
    root_prefix = roots[1]
    found: list[_Candidate] = []
    problems: list[PromptFileError] = []
    seen: set[str] = set()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.endswith(PROMPT_SUFFIX):
            problems.append(PromptFileError(f"{line}: not a *{PROMPT_SUFFIX} file"))
            continue
        path = _listed_path(line, input_dir, root_prefix)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            problems.append(MissingPromptFile(f"{line}: no such file"))
            continue
        except OSError as exc:
            problems.append(PromptFileError(f"{line}: cannot read: {exc.strerror}"))
            continue
        if not stat.S_ISREG(mode):
            problems.append(PromptFileError(f"{line}: not a regular file"))
            continue
        real = os.path.realpath(path)
        if not real.startswith(root_prefix):
            problems.append(PromptFileError(f"{line}: outside the input dir {input_dir}"))
            continue
        # Prefer the path as written (a symlink inside the input dir keeps its own name, as in
        # discover_prompts); fall back to the resolved one, e.g. when given through a link.
        rel = next((path[len(p) :] for p in roots if path.startswith(p)), real[len(root_prefix) :])
        rel = rel.replace(os.sep, "/")
        if rel not in seen:
            seen.add(rel)
            _add_candidate(found, problems, rel, os.path.join(root, rel), shown=line)
    return _finish(found, problems)


def _listed_path(line: str, input_dir: Path, root_prefix: str) -> str:
    """The absolute path a ``--files-from`` line names (see ``prompts_from_list``)."""
    here = os.path.abspath(line)
    if os.path.isabs(line):
        return here
    candidates = (here, os.path.abspath(os.path.join(input_dir, line)))
    existing = [path for path in candidates if os.path.lexists(path)]
    inside = [path for path in existing if os.path.realpath(path).startswith(root_prefix)]
    return (inside or existing or [here])[0]


def read_prompt(pf: PromptFile) -> tuple[bytes, str]:
    """Read a prompt file: its exact bytes (for hashing) and its text (for the model).

    Raises:
        PromptFileError: The file cannot be read, is not UTF-8, or is empty.
    """
    try:
        data = pf.path.read_bytes()
    except OSError as exc:
        raise PromptFileError(f"{pf.relative}: cannot read: {exc.strerror}") from exc
    return data, decode_prompt(data, str(pf.relative))


def decode_prompt(data: bytes, source: str) -> str:
    """Decode prompt bytes as UTF-8, dropping a leading BOM.

    Args:
        data: The raw prompt.
        source: How to name the prompt in errors (a relative path, ``"stdin"``).

    Raises:
        PromptFileError: Not UTF-8 (the message gives the byte offset), or empty or only
            whitespace.
    """
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        raise PromptFileError(
            f"{source}: not valid UTF-8 (byte 0x{data[offset]:02x} at offset {offset}); "
            "save the file as UTF-8"
        ) from exc
    if not text.strip():
        raise PromptFileError(f"{source}: prompt file is empty")
    return text


def _resolve_input_dir(input_dir: Path) -> str:
    try:
        mode = os.stat(input_dir).st_mode
    except FileNotFoundError:
        raise UsageError(f"input dir {input_dir} does not exist") from None
    except OSError as exc:
        raise UsageError(f"input dir {input_dir} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISDIR(mode):
        raise UsageError(f"input dir {input_dir} is not a directory")
    return os.path.realpath(input_dir)


def _dir_prefix(path: str) -> str:
    # "/a" -> "/a/", so that "/ab/x" does not count as inside "/a"; "/" stays "/".
    return path if path.endswith(os.sep) else path + os.sep


def _wanted_dir(name: str) -> bool:
    return not name.startswith(".")


# (relative path, absolute path, explicit format): PromptFile objects are only built for the
# prompts that are kept, because pathlib costs ~10 µs per object on Python 3.11.
_Candidate = tuple[str, str, str | None]


def _add_candidate(
    found: list[_Candidate],
    problems: list[PromptFileError],
    rel: str,
    path: str,
    shown: str | None = None,
) -> None:
    base = rel.rpartition("/")[2].removesuffix(PROMPT_SUFFIX)
    if not base:
        problems.append(PromptFileError(f"{shown or rel}: no name before {PROMPT_SUFFIX}"))
        return
    # An empty stem (".json.prompt.md") makes the whole base a name, as the seed read it.
    stem, _, ext = base.rpartition(".")
    explicit = ext.lower() if stem and _FORMAT.fullmatch(ext) else None
    found.append((rel, path, explicit))


def _output_names(rel: str, explicit: str | None) -> tuple[str, ...]:
    # The explicit extension keeps the case the user wrote (``a.JSON`` stays ``a.JSON``).
    base = rel.removesuffix(PROMPT_SUFFIX)
    return (base,) if explicit is not None else (f"{base}.json", f"{base}.md")


def _finish(
    candidates: list[_Candidate], problems: list[PromptFileError]
) -> tuple[list[PromptFile], list[PromptFileError]]:
    # Two prompts writing one file would silently overwrite an answer (``a.prompt.md`` in auto
    # mode and ``a.md.prompt.md``); the first one in order wins and the other is reported.
    # Names are compared case-folded because macOS and Windows file systems do so, and prompt
    # files count as taken names in case the output dir is the input dir.
    owners = {rel.casefold(): rel for rel, _, _ in candidates}
    prompts: list[PromptFile] = []
    for rel, path, explicit in candidates:
        outputs = _output_names(rel, explicit)
        folded = [o.casefold() for o in outputs]
        clash = next((i for i, o in enumerate(folded) if o in owners), None)
        if clash is None:
            owners.update(dict.fromkeys(folded, rel))
            prompts.append(PromptFile(Path(path), PurePosixPath(rel), explicit))
            continue
        owner = owners[folded[clash]]
        what = (
            "is a prompt file"
            if owner.casefold() == folded[clash]
            else f"is also the output of {owner}"
        )
        problems.append(
            PromptFileError(f"{rel}: its output {outputs[clash]} {what}; rename one of them")
        )
    return prompts, problems
