"""The ``--tree DIR`` option of the in-process benchmarks: the project's code imported from
another checkout (an A/B against an older commit, e.g. a ``git worktree``)."""

from __future__ import annotations

import argparse
import os
import sys

#: This checkout.
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_tree_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tree", default=PROJECT, help="the checkout whose code runs (default: this one)")


def import_from(tree: str) -> None:
    """Make the project's packages import from ``tree``; call it before importing any."""
    sys.path.insert(0, os.path.abspath(tree))
