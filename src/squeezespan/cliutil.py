"""The argument parsers of the command lines: one-line errors for all (`sns`, bench/ scripts) and `sns`'s top level."""

from __future__ import annotations

import argparse

__all__ = ["COMMANDS", "DESCRIPTION", "ArgumentParser", "sns_parser"]


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


DESCRIPTION = "squeezespan: distil image representations from a GAN generator (Squeeze and Span)."
# the sub-commands of `sns` and their one-line help, in the order `sns --help` lists them
COMMANDS = {
    "data": "dataset tools",
    "eval": "kNN + linear-probe evaluation of backbones (exported, raw pixels, random init)",
    "pretrain": "train a student with Squeeze and Span or a baseline",
    "train-gan": "train a StyleGAN2 teacher on a dataset",
    "demo": "end-to-end demo on the embedded digits data (teacher, SnS vs VICReg, report)",
    "bench": "benchmarks: fashion (incremental table), throughput, figures, teachers "
    "(accuracy vs teacher FD-ref), teacher-precision (what a bf16 teacher changes) (bench/ scripts)",
    "presets": "list the presets in configs/, each with its one-line description",
    "config": "config tools: `sns config show` prints a run's resolved config as YAML",
    "convert": "official StyleGAN2-ADA pickle -> teacher directory (safetensors, no pickle needed later)",
    "export": "export a run's backbone: native (safetensors + json) or hub (timm layout + card)",
}


def sns_parser(version: str) -> tuple[ArgumentParser, dict[str, ArgumentParser]]:
    """`sns` with --version and one parser per command, whose flags squeezespan.cli adds. Alone it answers
    `sns`, `sns --help` and `sns --version` without importing torch (squeezespan.entry)."""
    parser = ArgumentParser(prog="sns", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, {name: sub.add_parser(name, help=text) for name, text in COMMANDS.items()}
