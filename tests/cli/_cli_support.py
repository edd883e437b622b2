"""Shared shapes for the CLI tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Populated:
    """A bastion.yaml and the ids of runs in known states in its store."""

    config: Path
    completed: str
    waiting: str
    dead: str
