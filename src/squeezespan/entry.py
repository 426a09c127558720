"""The `sns` console script: loads the command line, so that Ctrl-C while torch loads ends in one line."""

from __future__ import annotations

import os
import signal


def _interrupted_while_loading(signum: int, frame: object) -> None:
    # Nothing is written before the CLI runs, so there is nothing to clean up: exit at once. Raising
    # KeyboardInterrupt instead could land inside a C++ extension's import and abort the process with a C++ message.
    os.write(2, b"interrupted\n")
    os._exit(130)


def main() -> int:
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        from .cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    return cli_main()
