"""Sub-commands of the ``harness`` command line, one module each.

A module here defines ``NAME`` (the sub-command), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. :mod:`harness.cli` discovers every module in this package, so adding a command
touches no other file. Heavy imports (torch, mmdet) belong inside ``run``.
"""
