"""Thumbnails for the gallery: made once per image with Pillow, never the full image.

A thumbnail is named by its image's SHA-256 and its size (and format), so it never goes
stale: an entry that is replaced has new digests, and so new thumbnail URLs. Two tiers keep
them:

    memory  a per-process LRU bounded by bytes: a page of the grid seen again costs no I/O
    disk    a diskcache folder, `<cache dir>/thumbs`, bounded by its own size limit (least
            recently stored go first) and shared by the worker processes, so a thumbnail
            is rendered once per host, not once per worker or per restart

Thumbnails are kept apart from the entry store on purpose: they are derived, can be made
again at any time, and must never count against (or be evicted with) the images the cache
exists to keep. A disk tier that cannot be opened or written (read-only or full folder)
degrades to memory only, logged once: the gallery still shows every image.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import diskcache
from PIL import Image, features

log = logging.getLogger("gateway.web")

THUMB_PX = 320  # the longest side: sharp on a 2x screen in a ~200 px wide card
MEMORY_BYTES = 16 * 1024 * 1024  # about a thousand thumbnails
DISK_BYTES = 256 * 1024 * 1024  # about 15,000 thumbnails of 1344x768 images
QUALITY = 80
FORMAT = "WEBP" if features.check("webp") else "JPEG"
MEDIA_TYPES = {"WEBP": "image/webp", "JPEG": "image/jpeg"}


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str


def thumbnail_size(width: int, height: int, px: int = THUMB_PX) -> tuple[int, int]:
    """The size `render` gives an image of `width` x `height` (for the <img> attributes,
    so the grid does not jump while thumbnails arrive). Never larger than the image."""
    if width <= 0 or height <= 0:
        return px, px
    scale = min(1.0, px / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def render(data: bytes, px: int = THUMB_PX, image_format: str = FORMAT) -> bytes:
    """A thumbnail of at most `px` x `px` (aspect kept) of an image's bytes."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (px, px))  # JPEG decodes at a reduced scale: much faster
        image.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=3.0)
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        if image_format == "JPEG" or not alpha:
            small = image.convert("RGB")
        else:
            small = image.convert("RGBA")
        out = io.BytesIO()
        small.save(out, format=image_format, quality=QUALITY)
        return out.getvalue()


class _MemoryLRU:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, Thumbnail] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Thumbnail | None:
        with self._lock:
            thumb = self._items.get(name)
            if thumb is not None:
                self._items.move_to_end(name)
            return thumb

    def put(self, name: str, thumb: Thumbnail) -> None:
        with self._lock:
            old = self._items.pop(name, None)
            if old is not None:
                self.used -= len(old.data)
            if len(thumb.data) > self.max_bytes:
                return
            self._items[name] = thumb
            self.used += len(thumb.data)
            while self.used > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.used -= len(dropped.data)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Gate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Thumbnailer:
    """Thumbnails by image digest: memory, then disk, then made from the image's bytes."""

    def __init__(
        self,
        folder: str | Path,
        *,
        px: int = THUMB_PX,
        memory_bytes: int = MEMORY_BYTES,
        disk_bytes: int = DISK_BYTES,
        image_format: str = FORMAT,
    ) -> None:
        self.folder = Path(folder)
        self.px = px
        self.image_format = image_format
        self.media_type = MEDIA_TYPES[image_format]
        self.disk_bytes = disk_bytes
        self.memory = _MemoryLRU(memory_bytes)
        self._disk: diskcache.Cache | None = None
        self._disk_failed = False
        self._disk_lock = threading.Lock()
        self._gates: dict[str, _Gate] = {}

    def name(self, sha256: str) -> str:
        return f"{sha256}:{self.px}:{self.image_format}"

    async def get(
        self, sha256: str, image: Callable[[], Awaitable[bytes | None]]
    ) -> Thumbnail | None:
        """The thumbnail of the image whose digest is `sha256`; `image()` gives its bytes
        (or None: gone) when no tier has it. Concurrent asks for one thumbnail in this
        process wait for one rendering rather than each making their own."""
        name = self.name(sha256)
        held = self.memory.get(name)
        if held is not None:
            return held
        gate = self._gates.setdefault(name, _Gate())
        gate.users += 1
        try:
            async with gate.lock:
                held = self.memory.get(name)
                if held is not None:
                    return held
                return await self._load_or_make(name, image)
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[name]

    async def _load_or_make(
        self, name: str, image: Callable[[], Awaitable[bytes | None]]
    ) -> Thumbnail | None:
        stored = await anyio.to_thread.run_sync(self._disk_get, name)
        if stored is not None:
            thumb = Thumbnail(stored, self.media_type)
            self.memory.put(name, thumb)
            return thumb
        data = await image()
        if data is None:
            return None
        small = await anyio.to_thread.run_sync(render, data, self.px, self.image_format)
        thumb = Thumbnail(small, self.media_type)
        self.memory.put(name, thumb)
        await anyio.to_thread.run_sync(self._disk_set, name, small)
        return thumb

    # -- the disk tier (blocking: called in worker threads) -------------------------------

    def _cache(self) -> diskcache.Cache | None:
        with self._disk_lock:
            if self._disk is None and not self._disk_failed:
                try:
                    self._disk = diskcache.Cache(
                        str(self.folder),
                        size_limit=self.disk_bytes,
                        eviction_policy="least-recently-stored",
                    )
                except Exception as exc:  # diskcache raises OSError, sqlite3 errors...
                    self._disk_failed = True
                    log.warning(
                        "gallery thumbnails: cannot use %s (%s); keeping them in memory only",
                        self.folder,
                        exc,
                    )
            return self._disk

    def _disk_get(self, name: str) -> bytes | None:
        cache = self._cache()
        if cache is None:
            return None
        try:
            value = cache.get(name)
        except Exception:
            log.debug("gallery thumbnails: read of %s failed", name[:16], exc_info=True)
            return None
        return value if isinstance(value, bytes) else None

    def _disk_set(self, name: str, data: bytes) -> None:
        cache = self._cache()
        if cache is None:
            return
        try:
            cache.set(name, data)
        except Exception as exc:
            log.warning("gallery thumbnails: could not store one in %s (%s)", self.folder, exc)

    def close(self) -> None:
        with self._disk_lock:
            if self._disk is not None:
                self._disk.close()
                self._disk = None
