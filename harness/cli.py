"""The ``harness`` command line (also ``python -m harness``).

Exit codes: 0 success, 1 a check or run failed, 2 bad usage or bad input (one line on stderr saying what
is wrong and how to fix it; argparse's own errors too, see :class:`Parser`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from harness import __version__, commands
from harness.commands import UsageError  # noqa: F401  (where commands raise it)


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


class Parser(argparse.ArgumentParser):
    """argparse's own usage errors (an unknown flag, a missing argument, a bad choice) as the harness's
    other usage errors: one line on stderr naming the command and pointing at its --help, exit 2. Every
    sub-command's parser (a command's own sub-parsers too) is one: ``add_subparsers`` makes them of this
    class."""

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", Parser)
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports them from the top-level parser; the sub-command's is the one to name
            self._chosen(args).error(f"unrecognized arguments: {' '.join(extras)}")
        return args

    def _chosen(self, namespace) -> "Parser":
        """The innermost (sub-)command's parser that parsed ``namespace``."""
        commands = getattr(self, "_commands", None)
        chosen = commands.choices.get(getattr(namespace, commands.dest, None)) if commands else None
        return chosen._chosen(namespace) if isinstance(chosen, Parser) else self

    def error(self, message: str):
        message = " ".join(message.split())  # argparse's messages are one line; keep it so
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="harness",
        description="Loss-comparison harness for detection and instance segmentation (RS, aLRP, AP, Focal, CE).",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        for line in str(exc).splitlines() or [""]:  # several problems: one line each
            print(f"harness {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
