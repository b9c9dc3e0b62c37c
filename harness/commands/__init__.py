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


def check_out_prefix(out: str, *, given: bool = True, suffixes: tuple[str, ...] = (".md", ".csv")) -> str:
    """An output prefix (``--out``) checked before the command measures anything: its folder (created when
    missing) must not be or lie under a regular file, and ``<out><suffix>`` must not be a folder; else a
    usage error of one line (the writers in harness.files would fail only after the whole measurement).
    ``given``: whether the user gave ``--out`` (else ``out`` is the command's default). Returns ``out``."""
    from pathlib import Path

    from harness.files import file_in_the_way, prefixed

    what = f"--out {out}" if given else f"{out} (the default --out)"
    if not Path(out).name or out.endswith(("/", "\\")):
        raise UsageError(f"{what} names a folder, not a prefix for the report's files: give --out FOLDER/NAME")
    for suffix in suffixes:
        target = prefixed(out, suffix)
        if target.is_dir():
            raise UsageError(f"{what}: {target} is a folder, not a file to write; give another --out prefix")
    blocker = file_in_the_way(Path(out).absolute().parent)
    if blocker is not None:
        raise UsageError(f"{what} lies under {blocker}, which is a file, not a folder to write the report into; "
                         f"give --out a prefix in a folder (it is created when missing)")
    return out
