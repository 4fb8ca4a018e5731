"""Bringing a cache folder of the first layout forward, so an upgrade pays for nothing twice.

The first layout kept everything in one diskcache folder, `<dir>/entries`:

    ("meta", key)               metadata dict (summary fields, created_at, version, source,
                                artifacts: [{seed, finish_reason, media_type, bytes, sha256}])
    ("blob", key, version, i)   image bytes
    ("hits", key)               (count, last_hit_at)

On first open of such a folder every entry whose bytes still match their SHA-256 is put
into the new store (with its hits), and the old folder is renamed `entries.migrated` once
all of them are in, so nothing is lost if the migration is interrupted.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import diskcache

from cache.local.blobs import DiskBlobStore
from cache.local.index import Index
from cache.model import Artifact, ArtifactInfo, EntryMeta, prompt_text

log = logging.getLogger("cache.local")

LEGACY_FOLDER = "entries"
INTERNAL = ("key", "created_at", "version", "bytes", "artifacts", "source", "hits", "last_hit_at")


def migrate(directory: Path, index: Index, blobs: DiskBlobStore) -> int:
    """Import the first layout's entries, if `directory` holds one; returns how many."""
    old = directory / LEGACY_FOLDER
    if not (old / "cache.db").is_file():
        return 0
    cache = diskcache.Cache(str(old))
    moved = skipped = 0
    try:
        for name in list(cache.iterkeys()):
            if not (isinstance(name, tuple) and len(name) == 2 and name[0] == "meta"):
                continue
            meta = cache.get(name)
            if not isinstance(meta, dict) or index.version(str(name[1])) is not None:
                continue
            if _move(cache, str(name[1]), meta, index, blobs):
                moved += 1
            else:
                skipped += 1
    finally:
        cache.close()
    old.rename(directory / f"{LEGACY_FOLDER}.migrated")
    log.warning(
        "cache folder %s: %d entries brought over from the first layout (%d damaged, left "
        "out); the old folder is now %s.migrated and may be deleted",
        directory, moved, skipped, LEGACY_FOLDER,
    )  # fmt: skip
    return moved


def _move(
    cache: diskcache.Cache, key: str, meta: dict[str, Any], index: Index, blobs: DiskBlobStore
) -> bool:
    artifacts = []
    for i, info in enumerate(meta.get("artifacts", [])):
        data = cache.get(("blob", key, str(meta.get("version", "")), i))
        if not isinstance(data, bytes):
            return False
        artifact = Artifact(
            data, int(info["seed"]), str(info["finish_reason"]), str(info["media_type"])
        )
        if artifact.sha256 != info.get("sha256"):
            return False
        artifacts.append(artifact)
    if not artifacts:
        return False
    for artifact in artifacts:
        blobs.put_sync(artifact.sha256, artifact.data)
    hits, last = cache.get(("hits", key), (0, None))
    summary = {k: v for k, v in meta.items() if k not in INTERNAL}
    entry = EntryMeta(
        key=key,
        version=uuid.uuid4().hex,
        created_at=float(meta.get("created_at") or time.time()),
        artifacts=tuple(ArtifactInfo.of(a) for a in artifacts),
        summary=summary,
        source="offline" if meta.get("source") == "offline" else "upstream",
        hits=int(hits),
        last_hit_at=last,
    )
    with index.write() as db:
        Index.insert(db, entry, prompt_text(summary))
    return True
