"""The ``llm-conductor`` console script: stopping works before the CLI is even imported.

Importing the CLI (typer, click, rich) takes a noticeable moment; a Ctrl-C or SIGTERM in it
must end the command like one a second later (one line, exit 130 or 143), not with Python's
traceback of whatever was being imported.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    from flows.interrupt import install_signal_handlers, stop_exit_code

    install_signal_handlers()
    try:
        from flows.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        raise SystemExit(stop_exit_code()) from None
    cli_main()


if __name__ == "__main__":
    main()
