"""The demo's "shop": a small SQLite database standing in for a company's systems of record.

Owns: customers, orders, refunds (a payment API that records each idempotency key and refuses a
duplicate one), the outbox of sent emails, and a log of which process executed which journal
step (the demo proves its durability claims by counting those rows across processes).
Does not own the tools the agent calls (``tools``) or anything about Bastion.

Each call opens its own connection: tools run in worker threads and the demo's crashed worker
is another process, so nothing here is shared in memory.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE customers (email TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE orders (
    id TEXT PRIMARY KEY, email TEXT NOT NULL REFERENCES customers(email),
    status TEXT NOT NULL, total REAL NOT NULL, items TEXT NOT NULL, placed TEXT NOT NULL
);
CREATE TABLE refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL REFERENCES orders(id),
    amount REAL NOT NULL, reason TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL, subject TEXT NOT NULL,
    body TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE
);
CREATE TABLE executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, process TEXT NOT NULL, pid INTEGER NOT NULL,
    run_id TEXT NOT NULL, step_no INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL
);
"""

_CUSTOMERS = [("dana@example.com", "Dana Reyes"), ("lee@example.com", "Lee Okafor")]
_ORDERS = [
    ("A-1001", "dana@example.com", "delivered", 38.50, "2 x coffee beans 1kg", "2026-11-02"),
    ("A-1002", "dana@example.com", "delivered", 249.00, "1 x espresso grinder", "2026-11-12"),
    ("A-1003", "dana@example.com", "shipped", 19.90, "1 x milk jug", "2026-11-20"),
    ("B-2001", "lee@example.com", "delivered", 74.00, "1 x pour-over kit", "2026-11-15"),
]


class DuplicateKey(Exception):
    """The payment or mail API saw this idempotency key before and refused the call."""


class RefundTooLarge(Exception):
    """The refund would exceed what is left to refund on the order."""


@dataclass(frozen=True, kw_only=True)
class Execution:
    process: str
    pid: int
    run_id: str
    step_no: int
    kind: str
    name: str


class Shop:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path) -> Shop:
        """A fresh shop at ``path`` (an existing file there is replaced)."""
        path.unlink(missing_ok=True)
        shop = cls(path)
        with shop._tx() as db:
            db.executescript(_SCHEMA)
            db.executemany("INSERT INTO customers VALUES (?, ?)", _CUSTOMERS)
            db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", _ORDERS)
        return shop

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            with db:
                yield db

    # ---- reads ----------------------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT o.*, c.name AS customer, "
                " (SELECT COALESCE(SUM(amount), 0) FROM refunds r WHERE r.order_id = o.id)"
                "  AS refunded "
                "FROM orders o JOIN customers c ON c.email = o.email WHERE o.id = ?",
                (order_id.strip().upper(),),
            ).fetchone()
        return dict(row) if row else None

    def orders_for(self, email: str) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, status, total, items, placed FROM orders WHERE email = ? ORDER BY id",
                (email.strip().lower(),),
            ).fetchall()
        return [dict(r) for r in rows]

    def refunds(self) -> list[dict[str, Any]]:
        with self._tx() as db:
            return [dict(r) for r in db.execute("SELECT * FROM refunds ORDER BY id")]

    def refund_by_key(self, key: str) -> dict[str, Any] | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM refunds WHERE idempotency_key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def outbox(self) -> list[dict[str, Any]]:
        with self._tx() as db:
            return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY id")]

    # ---- writes: what a payment API and a mail API would do --------------------------------

    def record_refund(
        self, *, order_id: str, amount: float, reason: str, idempotency_key: str
    ) -> dict[str, Any]:
        with self._tx() as db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute(
                "SELECT 1 FROM refunds WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone():
                raise DuplicateKey(f"idempotency key {idempotency_key} was already used")
            order = db.execute(
                "SELECT total, (SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = ?)"
                " AS refunded FROM orders WHERE id = ?",
                (order_id, order_id),
            ).fetchone()
            if order is None or amount > order["total"] - order["refunded"] + 1e-9:
                raise RefundTooLarge(f"refund of {amount:.2f} exceeds what is left on {order_id}")
            cursor = db.execute(
                "INSERT INTO refunds (order_id, amount, reason, idempotency_key) "
                "VALUES (?, ?, ?, ?)",
                (order_id, amount, reason, idempotency_key),
            )
            return {"refund_id": f"R-{cursor.lastrowid}", "order_id": order_id, "amount": amount}

    def send_email(self, *, to: str, subject: str, body: str, idempotency_key: str) -> int:
        with self._tx() as db:
            try:
                cursor = db.execute(
                    "INSERT INTO outbox (recipient, subject, body, idempotency_key) "
                    "VALUES (?, ?, ?, ?)",
                    (to, subject, body, idempotency_key),
                )
            except sqlite3.IntegrityError:
                raise DuplicateKey(f"idempotency key {idempotency_key} was already used") from None
            return int(cursor.lastrowid or 0)

    # ---- the demo's own evidence -----------------------------------------------------------

    def log_execution(
        self, *, process: str, run_id: str, step_no: int, kind: str, name: str
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO executions (process, pid, run_id, step_no, kind, name) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (process, os.getpid(), run_id, step_no, kind, name),
            )

    def executions(self, run_id: str) -> list[Execution]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT process, pid, run_id, step_no, kind, name FROM executions "
                "WHERE run_id = ? ORDER BY id",
                (run_id,),
            ).fetchall()
        return [Execution(**dict(r)) for r in rows]
