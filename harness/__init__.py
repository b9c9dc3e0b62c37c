"""Benchmarking and loss-comparison harness for object detection and instance segmentation.

The pipeline reads off the sub-packages: ``losses`` (the loss library) → detectors → runs → results.
"""

__version__ = "0.1.0"
