"""Persistence: one async store over SQLAlchemy Core; SQLite (default) or PostgreSQL by URL."""

from bastion.store._migrations import MIGRATIONS, Migration
from bastion.store._store import DeadLetter, Store

__all__ = ["DeadLetter", "MIGRATIONS", "Migration", "Store"]
