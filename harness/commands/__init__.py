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
    resolves from the current folder too, as under ``python -m harness``. A module that registers no loss
    loads, with a one-line note on stderr saying so."""
    import sys

    from harness.losses.registry import LossModuleError, add_current_folder_to_path, import_loss_module, loaded_source

    for target in targets:
        if not target.endswith(".py"):
            add_current_folder_to_path()
        imported_before = loaded_source(target) is not None or target in sys.modules
        try:
            registered = import_loss_module(target)
        except LossModuleError as exc:
            raise UsageError(str(exc)) from None
        if not registered and not imported_before:
            print(f"note: loss module {target} registered no loss; a loss module calls "
                  f"harness.losses.register_loss(LossSpec(name=..., ...)) when imported "
                  f"(see the README, 'Adding a loss')", file=sys.stderr)


def unknown_loss(name: str, loaded: list[str] | None = None) -> UsageError:
    """The usage error for a loss name not in the registry, listing the valid names. ``loaded``: the
    command's ``--load`` modules (None where the command takes no ``--load``), for the hint that a loss of
    one's own is registered by loading its module."""
    from harness.losses import loss_names

    message = f"unknown loss {name!r}; valid: {', '.join(loss_names())}"
    if loaded is not None and not loaded:
        message += "; for a loss of your own, pass --load MODULE (the .py file or module that registers it)"
    elif loaded:
        message += (f"; --load {' '.join(loaded)} registers no loss {name!r}: pass --load MODULE for the module "
                    f"that registers it")
    return UsageError(message)
