"""Sub-commands of the ``harness`` command line, one module each.

A module here defines ``NAME`` (the sub-command), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. :mod:`harness.cli` discovers every module in this package, so adding a command
touches no other file. Heavy imports (torch, mmdet) belong inside ``run``.
"""


class UsageError(Exception):
    """Bad input from the user: :mod:`harness.cli` prints it as one line and exits with code 2."""


def load_loss_modules(targets: list[str]) -> None:
    """Import external loss modules named on the command line (``--load``); one that does not exist or
    fails to import (any error) is a usage error of one line: ``file:line: Error: message``. A module name
    resolves from the current folder too, as under ``python -m harness``."""
    from harness.losses.registry import LossModuleError, add_current_folder_to_path, import_loss_module

    for target in targets:
        if not target.endswith(".py"):
            add_current_folder_to_path()
        try:
            import_loss_module(target)
        except LossModuleError as exc:
            raise UsageError(str(exc)) from None
