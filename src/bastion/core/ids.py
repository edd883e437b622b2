"""Identifier generation: time-ordered, URL-safe run ids. Owns nothing else."""

from __future__ import annotations

import os
import time


def new_id(prefix: str = "run") -> str:
    """A sortable id ``prefix_<12 hex ms timestamp><16 hex random>`` (a UUIDv7-like layout)."""
    ms = int(time.time() * 1000)
    return f"{prefix}_{ms:012x}{os.urandom(8).hex()}"
