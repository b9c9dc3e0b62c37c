"""Launching runs: cluster profiles and the local SLURM test cluster (:mod:`harness.launch.cluster`).

Modules here import nothing heavy at import time (no torch, no mmdet, no submitit): the command line
imports them to build its options, and heavy imports belong to the run that is launched.
"""
