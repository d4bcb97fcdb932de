"""Logging: one named logger per subsystem, one line per event, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("instaset")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
