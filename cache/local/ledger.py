"""The credits ledger of the local backend: one SQLite table (WAL) next to the coordination
state, shared by the worker processes of the host. Queried by time through its index."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cache.interfaces import LedgerPage, LedgerQuery, LedgerRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    route TEXT NOT NULL,
    engine TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    images INTEGER NOT NULL,
    credits REAL,
    caller TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_time ON ledger (time);
"""
FIELDS = "time, kind, route, engine, key, status, images, credits, caller"


def day_of(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


def summarise_days(records: Sequence[LedgerRecord]) -> dict[str, dict[str, float]]:
    """Totals per UTC day: credits spent (calls) and saved (hits), calls, hits, and calls
    whose charge is unknown (timeouts after the request was sent)."""
    days: dict[str, dict[str, float]] = {}
    for r in records:
        day = days.setdefault(
            day_of(r.time), {"spent": 0.0, "saved": 0.0, "calls": 0, "hits": 0, "unknown": 0}
        )
        if r.kind == "call":
            day["calls"] += 1
            if r.credits is None:
                day["unknown"] += 1
            else:
                day["spent"] += r.credits
        else:
            day["hits"] += 1
            day["saved"] += r.credits or 0.0
    return days


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def append(self, records: Sequence[LedgerRecord]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                f"INSERT INTO ledger ({FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.time, r.kind, r.route, r.engine, r.key, r.status, r.images, r.credits,
                     r.caller)
                    for r in records
                ],
            )  # fmt: skip
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, query: LedgerQuery) -> LedgerPage:
        where: list[str] = []
        args: list[Any] = []
        for column, value, op in (
            ("time", query.since, ">="),
            ("time", query.until, "<"),
            ("route", query.route, "="),
            ("caller", query.caller, "="),
            ("kind", query.kind, "="),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        db = self._db()
        rows = db.execute(
            f"SELECT {FIELDS} FROM ledger {clause} ORDER BY time DESC, id DESC LIMIT ? OFFSET ?",
            (*args, query.limit, query.offset),
        ).fetchall()
        total = int(db.execute(f"SELECT count(*) FROM ledger {clause}", args).fetchone()[0])
        day = "strftime('%Y-%m-%d', time, 'unixepoch')"
        totals = db.execute(
            f"SELECT {day},"
            " coalesce(sum(CASE WHEN kind = 'call' THEN credits END), 0),"
            " coalesce(sum(CASE WHEN kind = 'hit' THEN credits END), 0),"
            " sum(kind = 'call'), sum(kind = 'hit'),"
            " sum(kind = 'call' AND credits IS NULL)"
            f" FROM ledger {clause} GROUP BY 1 ORDER BY 1 DESC",
            args,
        ).fetchall()
        records = [LedgerRecord(*row) for row in rows]
        days = {
            str(d): {"spent": spent, "saved": saved, "calls": calls, "hits": hits,
                     "unknown": unknown}
            for d, spent, saved, calls, hits, unknown in totals
        }  # fmt: skip
        return LedgerPage(total, records, days)

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._connections = []
        self._local = threading.local()
