"""The loss registry: name → :class:`LossSpec`, the one place detector heads learn how to call a loss.

A head never branches on a loss's name. It reads the spec:

* ``targets``: ``'binary'`` (positives carry 1) or ``'quality'`` (positives carry their localisation
  quality in (0, 1], e.g. the IoU of the detached decoded box with its ground truth);
* ``ranking``: ``True`` when the loss ranks the whole batch at once, so the head must flatten every
  image × anchor × class logit into one call;
* ``balancing``: how the head weighs its localisation terms against classification: ``'fixed'`` (the
  recipe's constant weights), ``'value'`` (every iteration λ = classification value / localisation
  value, both detached: RS), ``'self_balance'`` (aLRP's SB weight, see :class:`~harness.losses.alrp.SelfBalance`);
* ``uses_loc_errors``: the classification call needs each positive's localisation error (aLRP);
* ``mmdet``: for pointwise losses, the mmdet loss config a standard head can take instead.

Heads call ``spec.classification(logits, targets, loc_errors=...)`` and get a
:class:`ClassificationOutput`. A new loss is one new module in this package (discovered on import) or an
external module that calls :func:`register_loss`; see the README, "Adding a loss".
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import Tensor

TARGET_KINDS = ("binary", "quality")
BALANCING = ("fixed", "value", "self_balance")


@dataclass(frozen=True)
class ClassificationOutput:
    """What a classification loss hands a head.

    ``loss``: the tensor to add to the head's total (its backward carries the loss's update);
    ``components``: named, detached values for logging; ``ranks``: each positive's smooth rank, for
    losses whose localisation component needs it (aLRP), else ``None``.
    """

    loss: Tensor
    components: Mapping[str, Tensor]
    ranks: Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    """A registered classification loss and the contract a detector head follows to use it."""

    name: str
    summary: str
    fn: Callable[..., Any]
    classify: Callable[..., ClassificationOutput]
    targets: str
    ranking: bool
    balancing: str
    uses_loc_errors: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    mmdet: Mapping[str, Any] | None = None
    usage: str = ""
    module: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"loss name {self.name!r} must be non-empty letters, digits, '-' or '_'")
        if self.targets not in TARGET_KINDS:
            raise ValueError(f"loss {self.name!r}: targets must be one of {TARGET_KINDS}, got {self.targets!r}")
        if self.balancing not in BALANCING:
            raise ValueError(f"loss {self.name!r}: balancing must be one of {BALANCING}, got {self.balancing!r}")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def classification(
        self, logits: Tensor, targets: Tensor, loc_errors: Tensor | None = None, **overrides: Any
    ) -> ClassificationOutput:
        """Call the loss with its defaults updated by ``overrides``."""
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise TypeError(
                f"loss {self.name!r}: unknown option(s) {sorted(unknown)}; valid: {sorted(self.defaults)}"
            )
        if self.uses_loc_errors and loc_errors is None:
            raise TypeError(f"loss {self.name!r} needs loc_errors (one localisation error per positive)")
        kwargs = {**self.defaults, **overrides}
        return self.classify(logits, targets, loc_errors, **kwargs)


_REGISTRY: dict[str, LossSpec] = {}
LOSSES: Mapping[str, LossSpec] = MappingProxyType(_REGISTRY)


def register_loss(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to the registry; a name already taken is refused."""
    if spec.name in _REGISTRY:
        owner = _REGISTRY[spec.name].module or "another module"
        raise ValueError(f"loss {spec.name!r} is already registered (by {owner}); choose another name")
    _REGISTRY[spec.name] = spec
    return spec


def get_loss(name: str) -> LossSpec:
    """The spec registered as ``name``; a KeyError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; valid: {', '.join(sorted(_REGISTRY))}") from None


def loss_names() -> list[str]:
    return sorted(_REGISTRY)


def describe_load_error(exc: BaseException, target: str) -> str:
    """One line for a loss module that failed to import: ``file:line: Error: message`` at the module's own
    line (a syntax error's, else the deepest frame in the module's file, else the deepest frame)."""
    import traceback

    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    own = _module_file(target)
    mine = [f for f in frames if own and Path(f.filename).resolve() == Path(own)]
    outside = [f for f in frames if "importlib" not in f.filename and not f.filename.endswith("registry.py")]
    frame = (mine or outside or frames or [None])[-1]
    where = f"{frame.filename}:{frame.lineno}: " if frame is not None else f"{target}: "
    return f"{where}{type(exc).__name__}: {exc}"


def _module_file(target: str) -> str | None:
    """The file a loss module target names (resolved), when it can be told without importing it."""
    if target.endswith(".py"):
        return str(Path(target).resolve())
    module = sys.modules.get(target)
    origin = getattr(module, "__file__", None)
    if origin is None:
        try:
            found = importlib.util.find_spec(target)
        except Exception:  # a parent package that fails to import, a malformed name
            return None
        origin = found.origin if found is not None else None
    return str(Path(origin).resolve()) if origin else None


def _where_modules_are_looked_for() -> str:
    """Where a dotted module name was looked for, in words: the current folder (when on sys.path),
    PYTHONPATH (when set) and the installed packages."""
    import os

    places = []
    cwd = os.getcwd()
    if any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        places.append(f"the current folder ({cwd})")
    if os.environ.get("PYTHONPATH"):
        places.append(f"PYTHONPATH ({os.environ['PYTHONPATH']})")
    places.append("the installed packages")
    return ", ".join(places[:-1]) + (" or " if len(places) > 1 else "") + places[-1]


def add_current_folder_to_path() -> None:
    """Let a dotted module name resolve from the current folder, as under ``python -m`` (which puts it on
    ``sys.path``; the ``harness`` console script does not). Appended, so it shadows nothing installed."""
    import os

    cwd = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.append(cwd)
        importlib.invalidate_caches()


class LossModuleNotFound(ModuleNotFoundError):
    """The loss module named (a dotted name) is nowhere on the import path; not an import inside it."""


class LossModuleError(ImportError):
    """A loss module that cannot be imported, as one line: its message (``file:line: Error: message``
    for an error raised while importing it); ``missing`` when the module itself was not found."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def import_loss_module(target: str) -> list[str]:
    """:func:`load_loss_module`, every failure a :class:`LossModuleError` of one line: the one code path
    ``--load`` on the command line and a spec's ``loss_modules`` share."""
    try:
        return load_loss_module(target)
    except (FileNotFoundError, LossModuleNotFound) as exc:
        raise LossModuleError(str(exc), missing=True) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # anything the module raises while importing (SystemExit too): where, what
        raise LossModuleError(describe_load_error(exc, target)) from None


def load_loss_module(target: str) -> list[str]:
    """Import an external loss module by dotted name or ``.py`` path; return the names it registered.

    The module registers its loss(es) with :func:`register_loss` when imported. Importing the same
    module twice is a no-op.
    """
    before = set(_REGISTRY)
    path = Path(target)
    if target.endswith(".py"):
        if not path.is_file():
            raise FileNotFoundError(f"loss module file {target} does not exist")
        mod_name = f"harness_external_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        if mod_name not in sys.modules:
            source = path.read_bytes()
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
            _LOADED_SOURCES[str(path.resolve())] = (str(path.resolve()), hashlib.sha256(source).hexdigest())
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
                raise LossModuleNotFound(
                    f"loss module {target!r} cannot be imported: no module {exc.name!r} in {_where_modules_are_looked_for()}; "
                    f"run from its folder, put its folder on PYTHONPATH or give a .py path"
                ) from None
            raise
        if target not in _LOADED_SOURCES and getattr(module, "__file__", None):
            _LOADED_SOURCES[target] = (module.__file__, hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest())
    return sorted(set(_REGISTRY) - before)


# What each external loss module's file held when this process imported it: key (a ``.py`` path,
# resolved, or a dotted name) → (file, sha256). A run's fingerprint records the code it actually ran.
_LOADED_SOURCES: dict[str, tuple[str, str]] = {}


def loaded_source(target: str) -> tuple[str, str] | None:
    """(file, sha256 of its content when imported here) of an external loss module :func:`load_loss_module`
    imported in this process (``target`` as given to it); None when it was not imported here."""
    key = str(Path(target).resolve()) if target.endswith(".py") else target
    return _LOADED_SOURCES.get(key)
