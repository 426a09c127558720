"""The argument parser every command line of the project shares (`sns` and the bench/ scripts)."""

from __future__ import annotations

import argparse

__all__ = ["ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: ...; see `<prog> --help``, and exit 2, like every other error.

    Sub-command parsers made with `add_subparsers` are of this class too. After parsing, the namespace's
    `command_parser` is the deepest (sub-)command parser that ran, so an error found later (an unknown
    flag, a missing sub-command) names that command's `--help`.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "command_parser"):  # sub-commands finish first: the deepest one is kept
            namespace.command_parser = self
        return namespace, extras

    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")
