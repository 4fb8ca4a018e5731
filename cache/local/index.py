"""The entry index: one SQLite database (WAL) in the cache folder.

Listing, counting and searching the cache read this index, never the blobs: totals are
maintained by triggers in the same transaction as every insert and delete, pages come from
the `created_at` index (newest first), filters by engine or route use their own indexes,
and prompt text is searched through an FTS5 trigram table (substring search, any case).
At 100,000 entries a page or the totals take well under a few milliseconds (bench/).

Each thread gets its own connection (SQLite connections are not shared across threads);
writes take `BEGIN IMMEDIATE`, so worker processes serialise on SQLite's own lock.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cache.interfaces import EntryQuery
from cache.model import ArtifactInfo, EntryMeta

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
# Prompt searches shorter than a trigram cannot use the FTS index; they scan with LIKE.
TRIGRAM = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    route TEXT NOT NULL,
    engine TEXT NOT NULL,
    prompt TEXT NOT NULL,
    source TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    artifacts TEXT NOT NULL,
    summary TEXT NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit_at REAL
);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created_at);
-- Each index also holds the rowid (`id`), so a filtered page newest first is a walk of
-- one index range in order, with no sort.
CREATE INDEX IF NOT EXISTS entries_engine ON entries (engine);
CREATE INDEX IF NOT EXISTS entries_route ON entries (route);
CREATE TABLE IF NOT EXISTS blob_refs (
    sha256 TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (sha256, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_refs_key ON blob_refs (key);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('entries', 0), ('bytes', 0);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(
    prompt, content='entries', content_rowid='id', tokenize='trigram'
);
CREATE TRIGGER IF NOT EXISTS entries_insert AFTER INSERT ON entries BEGIN
    UPDATE totals SET value = value + 1 WHERE name = 'entries';
    UPDATE totals SET value = value + new.bytes WHERE name = 'bytes';
    INSERT INTO entries_fts (rowid, prompt) VALUES (new.id, new.prompt);
END;
CREATE TRIGGER IF NOT EXISTS entries_delete AFTER DELETE ON entries BEGIN
    UPDATE totals SET value = value - 1 WHERE name = 'entries';
    UPDATE totals SET value = value - old.bytes WHERE name = 'bytes';
    INSERT INTO entries_fts (entries_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    DELETE FROM blob_refs WHERE key = old.key;
END;
"""

COLUMNS = "key, version, created_at, expires_at, source, artifacts, summary, hits, last_hit_at"


def row_to_meta(row: Sequence[Any]) -> EntryMeta:
    key, version, created_at, expires_at, source, artifacts, summary, hits, last_hit_at = row
    return EntryMeta(
        key=key,
        version=version,
        created_at=created_at,
        expires_at=expires_at,
        source=source,
        artifacts=tuple(ArtifactInfo.from_dict(a) for a in json.loads(artifacts)),
        summary=json.loads(summary),
        hits=hits,
        last_hit_at=last_hit_at,
    )


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        db = self.connection()
        # Each statement is idempotent; several workers starting at once wait on SQLite's
        # lock (busy_timeout) rather than fail.
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            self._connections.append(db)
        return db

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so it never deadlocks
        with another process upgrading a read."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        for db in self._connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._connections = []
        self._local = threading.local()

    # -- queries --------------------------------------------------------------------------

    def version(self, key: str) -> str | None:
        row = (
            self.connection()
            .execute("SELECT version FROM entries WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def meta(self, key: str) -> EntryMeta | None:
        row = (
            self.connection()
            .execute(f"SELECT {COLUMNS} FROM entries WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else row_to_meta(row)

    def totals(self) -> dict[str, int]:
        rows = self.connection().execute("SELECT name, value FROM totals").fetchall()
        return {str(name): int(value) for name, value in rows}

    def referenced(self, sha256: str) -> bool:
        row = (
            self.connection()
            .execute("SELECT 1 FROM blob_refs WHERE sha256 = ? LIMIT 1", (sha256,))
            .fetchone()
        )
        return row is not None

    def resolve(self, prefix: str, limit: int) -> list[str]:
        rows = (
            self.connection()
            .execute(
                "SELECT key FROM entries WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                (prefix, prefix + "\U0010ffff", limit),
            )
            .fetchall()
        )
        return [str(r[0]) for r in rows]

    def page(self, query: EntryQuery, total_if_unfiltered: int) -> tuple[int, list[EntryMeta]]:
        """One page newest first. Newest is highest `id`: rows are inserted when stored (a
        new version is a new row), so the primary key is the order, and a prompt search
        walks the FTS index in that same order instead of sorting its matches."""
        where: list[str] = []
        args: list[Any] = []
        if query.engine:
            where.append("e.engine = ?")
            args.append(query.engine)
        if query.route:
            where.append("e.route = ?")
            args.append(query.route)
        if query.since is not None:
            where.append("e.created_at >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("e.created_at < ?")
            args.append(query.until)
        source, order = "entries e", "e.id"
        if query.prompt and len(query.prompt) >= TRIGRAM:
            source, order = "entries_fts f JOIN entries e ON e.id = f.rowid", "f.rowid"
            where.insert(0, "entries_fts MATCH ?")
            args.insert(0, '"' + query.prompt.replace('"', '""') + '"')
        elif query.prompt:
            escaped = query.prompt.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("e.prompt LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        columns = ", ".join(f"e.{c.strip()}" for c in COLUMNS.split(","))
        db = self.connection()
        rows = db.execute(
            f"SELECT {columns} FROM {source} {clause} ORDER BY {order} DESC LIMIT ? OFFSET ?",
            (*args, query.limit, query.offset),
        ).fetchall()
        if not where:
            total = total_if_unfiltered
        elif where == ["entries_fts MATCH ?"]:  # the FTS index counts its own matches
            total = int(
                db.execute(
                    "SELECT count(*) FROM entries_fts WHERE entries_fts MATCH ?", args
                ).fetchone()[0]
            )
        else:
            total = int(db.execute(f"SELECT count(*) FROM {source} {clause}", args).fetchone()[0])
        return total, [row_to_meta(r) for r in rows]

    def oldest(self, limit: int) -> list[str]:
        rows = (
            self.connection()
            .execute("SELECT key FROM entries ORDER BY created_at LIMIT ?", (limit,))
            .fetchall()
        )
        return [str(r[0]) for r in rows]

    # -- writes (callers hold a `write()` transaction) -------------------------------------

    @staticmethod
    def insert(db: sqlite3.Connection, meta: EntryMeta, prompt: str) -> None:
        db.execute(
            "INSERT INTO entries (key, version, created_at, expires_at, route, engine, prompt,"
            " source, bytes, artifacts, summary, hits, last_hit_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                meta.key,
                meta.version,
                meta.created_at,
                meta.expires_at,
                meta.route,
                meta.engine,
                prompt,
                meta.source,
                meta.bytes,
                json.dumps([a.as_dict() for a in meta.artifacts]),
                json.dumps(meta.summary, ensure_ascii=False, default=str),
                meta.hits,
                meta.last_hit_at,
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO blob_refs (sha256, key) VALUES (?, ?)",
            [(a.sha256, meta.key) for a in meta.artifacts],
        )

    @staticmethod
    def delete(db: sqlite3.Connection, key: str, version: str | None = None) -> list[str]:
        """Delete `key` (only at `version`, when given); returns the digests it used."""
        if version is None:
            row = db.execute("SELECT artifacts FROM entries WHERE key = ?", (key,)).fetchone()
        else:
            row = db.execute(
                "SELECT artifacts FROM entries WHERE key = ? AND version = ?", (key, version)
            ).fetchone()
        if row is None:
            return []
        db.execute("DELETE FROM entries WHERE key = ?", (key,))
        return [str(a["sha256"]) for a in json.loads(row[0])]
