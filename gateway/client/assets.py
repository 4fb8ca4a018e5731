"""Asset records: one row per image of a project, kept with SQLAlchemy 2.

SQLite at `{root}/assets.db` by default; any SQLAlchemy URL works (`postgresql://...`).
A row is keyed by (project, type, segment index), so rerunning a script updates the
project's rows in place (same ids, same created_at) instead of adding new ones.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class Asset(Base):
    """One generated (or failed) image of a project.

    `meta` (column `metadata`; the attribute name `metadata` belongs to SQLAlchemy) holds
    index, description, prompt, negative prompt, seed, cache key, X-Cache, credits, and
    the generated and final sizes.
    """

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("project_id", "asset_type", "segment_index"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    project_id: Mapped[str] = mapped_column(String(200), index=True)
    asset_type: Mapped[str] = mapped_column(String(20), default="image")
    index: Mapped[int] = mapped_column("segment_index", Integer)
    status: Mapped[str] = mapped_column(String(20))  # "completed" | "failed"
    file_path: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )

    def __repr__(self) -> str:
        return (
            f"Asset(id={self.id!r}, project_id={self.project_id!r}, index={self.index}, "
            f"status={self.status!r}, file_path={self.file_path!r})"
        )


@dataclass(frozen=True)
class AssetRow:
    """What to record for one image; `save` inserts or updates the matching row."""

    index: int
    status: str
    file_path: str | None
    meta: dict[str, Any]
    error: str | None = None
    asset_type: str = "image"


def database_url(where: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL as given, or a file path turned into a SQLite URL."""
    text = os.fspath(where)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"


class AssetStore:
    """The asset table behind one database; creates the table on first use."""

    def __init__(self, where: str | os.PathLike[str]) -> None:
        url = database_url(where)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.url = parsed.render_as_string(hide_password=True)
        self.engine: Engine = create_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def under(cls, root: str | os.PathLike[str]) -> AssetStore:
        """The default store, SQLite at `{root}/assets.db`."""
        return cls(Path(root) / "assets.db")

    def project(self, project_id: str, asset_type: str = "image") -> list[Asset]:
        """Every row of a project, by segment index."""
        with self._sessions() as session:
            query = (
                select(Asset)
                .where(Asset.project_id == project_id, Asset.asset_type == asset_type)
                .order_by(Asset.index)
            )
            return list(session.scalars(query))

    def save(self, project_id: str, rows: Sequence[AssetRow]) -> list[Asset]:
        """Insert or update one row per (type, index), in one transaction; in `rows` order."""
        with self._sessions() as session, session.begin():
            saved = [self._upsert(session, project_id, row) for row in rows]
        return saved

    @staticmethod
    def _upsert(session: Session, project_id: str, row: AssetRow) -> Asset:
        query = select(Asset).where(
            Asset.project_id == project_id,
            Asset.asset_type == row.asset_type,
            Asset.index == row.index,
        )
        asset = session.scalars(query).one_or_none()
        if asset is None:
            asset = Asset(project_id=project_id, asset_type=row.asset_type, index=row.index)
            session.add(asset)
        asset.status = row.status
        asset.file_path = row.file_path
        asset.error = row.error
        asset.meta = dict(row.meta)
        return asset

    def close(self) -> None:
        self.engine.dispose()
