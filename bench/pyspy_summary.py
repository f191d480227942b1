"""Who burns the CPU in a py-spy profile: Prefect, litellm, our code, the event loop...

Plain script::

    .venv/bin/py-spy record -r 200 --format raw -o prof.txt -- .venv/bin/python ...
    .venv/bin/python bench/pyspy_summary.py prof.txt [--top 25]

``batch_bench.py --py-spy DIR`` records every batch child this way.

Each sample goes to its *innermost owner*: walking from the leaf towards the root, the first
frame that belongs to our code (blocks/, tasks/, flows/), litellm, the OpenAI SDK or Prefect.
Libraries they call (pydantic, httpx, json, logging, sqlite...) are charged to that caller, so
"prefect" means "CPU spent because Prefect asked for it". Samples with no owner are split by
their leaf: the asyncio event loop itself, imports, and the rest.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# py-spy names files relative to their sys.path entry: "prefect/flow_engine.py",
# "tasks/outputs.py", "threading.py", "<frozen posixpath>"; some keep a longer path.
OWNERS = {
    "blocks": "ours",
    "tasks": "ours",
    "flows": "ours",
    "litellm": "litellm",
    "openai": "openai SDK",
    "prefect": "prefect",
}
#: Leaves where a thread waits rather than works (py-spy cannot always tell).
IDLE = re.compile(
    r"^(Condition\.wait|_worker|Event\.wait|Thread\.join|select|poll|epoll|sleep|_wait_for_tstate"
    r"|Queue\.get|SimpleQueue\.get|wait|acquire)$"
)


def _package(path: str) -> str:
    path = re.sub(r"^.*/site-packages/", "", path)
    path = re.sub(r"^/(work|tmp)/[^/]+/", "", path)  # our checkout, any folder name
    return path.split("/", 1)[0] if "/" in path else ""


def owner_of(stack: list[str]) -> tuple[str, str]:
    """(category, "func (file:line)") of the innermost owning frame."""
    leaf = FRAME.match(stack[-1]) if stack else None
    if leaf and IDLE.match(leaf["func"]):
        return "idle (waiting)", f"{leaf['func']} ({leaf['file']})"
    imports = False
    for frame in reversed(stack):  # leaf first
        match = FRAME.match(frame)
        if not match:
            continue
        if "importlib._bootstrap" in match["file"]:
            imports = True
        name = OWNERS.get(_package(match["file"]))
        if name:
            return name, f"{match['func']} ({match['file']}:{match['line']})"
    if imports:
        return "imports", ""
    if leaf and ("asyncio" in leaf["file"] or "selectors" in leaf["file"]):
        return "event loop", f"{leaf['func']} ({leaf['file']})"
    return "other", stack[-1] if stack else ""


def summarize(path: Path, top: int) -> None:
    totals: collections.Counter[str] = collections.Counter()
    funcs: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stack = stack_text.split(";")
        # py-spy puts "process ... " / "thread ..." pseudo-frames first with some options.
        stack = [f for f in stack if not f.startswith(("process ", "thread "))]
        name, where = owner_of(stack)
        totals[name] += int(count)
        funcs[f"{name}: {where}"] += int(count)
    idle = totals.pop("idle (waiting)", 0)
    for key in [k for k in funcs if k.startswith("idle (waiting)")]:
        del funcs[key]
    total = sum(totals.values()) or 1
    print(f"{path}: {total} busy samples ({idle} idle-thread samples left out)")
    for name, count in totals.most_common():
        print(f"  {name:<12} {100 * count / total:5.1f}%")
    print(f"  top {top} innermost owner frames:")
    for name, count in funcs.most_common(top):
        print(f"    {100 * count / total:5.1f}%  {name[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.profiles:
        summarize(path, args.top)


if __name__ == "__main__":
    main()
