"""Datasets: the embedded synthetic benchmark, COCO 2017 / LVIS v1 under a data root, and your own
COCO-format data.

- :func:`ensure_synthetic` / :func:`generate_synthetic` (``harness.data.synthetic``): the generated
  dataset, COCO or LVIS v1 format, cached by its parameters.
- :func:`coco_paths` / :func:`lvis_paths` (``harness.data.real``): the real datasets under a data root.
- :func:`coco_format_paths` / :func:`check_dataset` (``harness.data.coco_format``): a user's own
  COCO-format files, checked before anything trains.
- :class:`DatasetPaths`: what they all return; ``.mmdet_dataset(split, pipeline)`` gives mmdet's dataset
  config (LVIS training wrapped in ``ClassBalancedDataset``).

Layouts, environment variables and commands: ``docs/data-evaluation.md``.
"""

from harness.data.coco_format import DataProblems, check_dataset, coco_format_paths
from harness.data.paths import DatasetPaths
from harness.data.real import DataRootError, coco_paths, lvis_paths, real_paths
from harness.data.synthetic import (
    SyntheticParams,
    categories,
    class_names,
    dataset_paths,
    ensure_synthetic,
    generate_synthetic,
    lvis_frequency,
    summary,
)

__all__ = [
    "DataProblems",
    "DataRootError",
    "DatasetPaths",
    "SyntheticParams",
    "categories",
    "check_dataset",
    "class_names",
    "coco_format_paths",
    "coco_paths",
    "dataset_paths",
    "ensure_synthetic",
    "generate_synthetic",
    "lvis_frequency",
    "lvis_paths",
    "real_paths",
    "summary",
]
