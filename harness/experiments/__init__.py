"""Experiments: specs (``experiments/*.yaml``) → runs, their dispatch, and their result rows."""
