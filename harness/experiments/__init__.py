"""Experiments: specs (``experiments/*.yaml``) → runs, their dispatch, and their result rows."""

from __future__ import annotations

from pathlib import Path

# What `harness benchmark` and `harness bench-phases` run without a spec: this file of the harness's own
# checkout (the folder above the `harness` package), wherever the command runs from.
DEFAULT_SPEC_NAME = "experiments/synthetic.yaml"
DEFAULT_SPEC = Path(__file__).resolve().parents[2] / DEFAULT_SPEC_NAME


def default_spec() -> str:
    """:data:`DEFAULT_SPEC` as a user here would write it: relative to the current folder when it lies under
    it (``experiments/synthetic.yaml`` from the checkout's root), else absolute."""
    try:
        return str(DEFAULT_SPEC.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(DEFAULT_SPEC)


def is_default_spec(path: str | Path) -> bool:
    """``path`` (relative to the current folder) names :data:`DEFAULT_SPEC`."""
    return Path(path).resolve() == DEFAULT_SPEC.resolve()
