"""Datasets: the embedded synthetic benchmark and COCO 2017 / LVIS v1 under a data root.

- :func:`ensure_synthetic` / :func:`generate_synthetic` (``harness.data.synthetic``): the generated
  dataset, COCO or LVIS v1 format, cached by its parameters.
- :func:`coco_paths` / :func:`lvis_paths` (``harness.data.real``): the real datasets under a data root.
- :class:`DatasetPaths`: what both return; ``.mmdet_dataset(split, pipeline)`` gives mmdet's dataset
  config (LVIS training wrapped in ``ClassBalancedDataset``).

Layouts, environment variables and commands: ``docs/data-evaluation.md``.
"""

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
    "DataRootError",
    "DatasetPaths",
    "SyntheticParams",
    "categories",
    "class_names",
    "coco_paths",
    "dataset_paths",
    "ensure_synthetic",
    "generate_synthetic",
    "lvis_frequency",
    "lvis_paths",
    "real_paths",
    "summary",
]
