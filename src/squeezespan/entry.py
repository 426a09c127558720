"""The `sns` console script: answers `sns`, `--help`, `--version` and unknown commands at once, loads the command
line for the rest (so that Ctrl-C while torch loads ends in one line)."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(signum: int, frame: object) -> None:
    # Nothing is written before the CLI runs, so there is nothing to clean up: exit at once. Raising
    # KeyboardInterrupt instead could land inside a C++ extension's import and abort the process with a C++ message.
    os.write(2, b"interrupted\n")
    os._exit(130)


def main() -> int:
    argv = sys.argv[1:]
    from .cliutil import COMMANDS

    if not argv or argv[0] not in COMMANDS:  # also -h, --help, --version: no command is spelt with a dash
        # the top level, and an unknown command's one-line error, need no torch (4-6 s to import with torchvision):
        # the same parser squeezespan.cli builds its commands on
        from .cliutil import sns_parser

        parser, _ = sns_parser(sys.modules[__package__].__version__)  # the package, imported before this module
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv)  # prints the help, the version or the error, and exits
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        from .cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    return cli_main()
