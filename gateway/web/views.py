"""What the gallery's templates show, made from entries and counters: plain values, no I/O.

The templates only lay these out; every number is formatted and every URL built here, so
the templates hold no logic worth testing and these functions can be tested directly.
Values are left unescaped here on purpose: Jinja's autoescaping escapes every one of them
when it is rendered (a prompt holding `<script>` is shown as text).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cache.model import EntryMeta, prompt_text
from gateway.web.thumbs import thumbnail_size

PriceOf = Callable[[EntryMeta], float | None]

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
TIME_FIELDS = ("created_at", "expires_at", "last_hit_at")


def summary_price(meta: EntryMeta) -> float | None:
    """The entry's price when its summary records one (`credits`): what each hit saved."""
    value = meta.summary.get("credits")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def credits_text(value: float) -> str:
    """12, 2.5, 0.35: at most two decimals, no trailing zeros, thousands separated."""
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def bytes_text(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def time_text(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def iso_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def thumb_url(key: str, sha256: str) -> str:
    return f"/gallery/thumbs/{key}/{sha256}"


def image_url(key: str, sha256: str, *, download: bool = False) -> str:
    return f"/gallery/images/{key}/{sha256}" + ("?download=1" if download else "")


def detail_url(key: str) -> str:
    return f"/gallery/entries/{quote(key)}"


@dataclass(frozen=True)
class Card:
    key: str
    short_key: str
    prompt: str
    negative: str
    route: str
    engine: str
    size: str
    seed: str
    hits: int
    saved: str
    created: str
    created_iso: str
    source: str
    images: int
    thumb_url: str
    thumb_width: int
    thumb_height: int
    detail_url: str


def negative_text(summary: Mapping[str, Any]) -> str:
    prompts = summary.get("prompts") or []
    texts = []
    for p in prompts:
        if not isinstance(p, Mapping):
            continue
        try:
            weight = float(p.get("weight", 1) or 0)
        except (TypeError, ValueError):
            continue
        if weight < 0 and p.get("text"):
            texts.append(str(p["text"]))
    negative = summary.get("negative_prompt")
    if isinstance(negative, str) and negative:
        texts.append(negative)
    return " | ".join(texts)


def _dimensions(meta: EntryMeta) -> tuple[int, int]:
    try:
        return int(meta.summary.get("width") or 0), int(meta.summary.get("height") or 0)
    except (TypeError, ValueError):
        return 0, 0


def card(meta: EntryMeta, price_of: PriceOf) -> Card:
    width, height = _dimensions(meta)
    tw, th = thumbnail_size(width, height)
    first = meta.artifacts[0] if meta.artifacts else None
    seed = first.seed if first is not None else meta.summary.get("seed", "")
    price = price_of(meta)
    prompt = prompt_text(meta.summary) or str(meta.summary.get("prompt", "") or "")
    return Card(
        key=meta.key,
        short_key=meta.key[:12],
        prompt=prompt or "(no prompt)",
        negative=negative_text(meta.summary),
        route=meta.route,
        engine=meta.engine,
        size=f"{width}\u00d7{height}" if width and height else "?",
        seed=str(seed),
        hits=meta.hits,
        saved=credits_text(meta.hits * price) if price is not None else "0",
        created=time_text(meta.created_at),
        created_iso=iso_time(meta.created_at),
        source=meta.source,
        images=len(meta.artifacts),
        thumb_url=thumb_url(meta.key, first.sha256) if first is not None else "",
        thumb_width=tw,
        thumb_height=th,
        detail_url=detail_url(meta.key),
    )


@dataclass(frozen=True)
class Field:
    name: str
    value: str
    block: bool  # shown as preformatted JSON


def fields(meta: EntryMeta, price_of: PriceOf) -> list[Field]:
    """Every metadata field of an entry, as inspection's JSON has them, in a stable order
    (the entry's own first, then the route's summary), plus what its hits saved."""
    public = meta.public()
    first = ["key", "version", "route", "engine", "prompts", "width", "height", "seed"]
    order = [n for n in first if n in public] + sorted(n for n in public if n not in first)
    out: list[Field] = []
    for name in order:
        value = public[name]
        if name in TIME_FIELDS and isinstance(value, int | float):
            out.append(Field(name, f"{time_text(value)} ({value:.3f})", False))
        elif isinstance(value, dict | list):
            out.append(Field(name, json.dumps(value, indent=2, ensure_ascii=False), True))
        else:
            out.append(Field(name, "null" if value is None else str(value), False))
    price = price_of(meta)
    out.append(
        Field("credits saved", credits_text(meta.hits * price) if price is not None else "0", False)
    )
    return out


@dataclass(frozen=True)
class ImageView:
    index: int
    url: str
    download_url: str
    filename: str
    media_type: str
    size: str
    seed: int
    finish_reason: str


def image_views(meta: EntryMeta) -> list[ImageView]:
    width, height = _dimensions(meta)
    out = []
    for i, a in enumerate(meta.artifacts):
        out.append(
            ImageView(
                index=i,
                url=image_url(meta.key, a.sha256),
                download_url=image_url(meta.key, a.sha256, download=True),
                filename=download_name(meta.key, i, a.media_type),
                media_type=a.media_type,
                size=bytes_text(a.bytes)
                + (f", {width}\u00d7{height}" if width and height and i == 0 else ""),
                seed=a.seed,
                finish_reason=a.finish_reason,
            )
        )
    return out


def download_name(key: str, index: int, media_type: str) -> str:
    return f"{key[:16]}-{index}.{EXTENSIONS.get(media_type, 'bin')}"


@dataclass(frozen=True)
class Totals:
    entries: int
    disk: str
    image_bytes: str
    hit_ratio: str
    spent_today: str
    spent_all: str
    saved_today: str
    saved_all: str
    hits: int
    misses: int


def totals(summary: Mapping[str, Any], counts: Mapping[str, float], today: str) -> Totals:
    """The header's figures: `summary` from gateway.stats, `counts` the shared counters
    (the ledger's `credits_spent`, `credits_saved` and their `:YYYY-MM-DD` days, 0 until it
    has recorded anything)."""

    def credit(name: str) -> str:
        return credits_text(float(counts.get(name, 0) or 0))

    return Totals(
        entries=int(summary["entries"]),
        disk=bytes_text(int(summary["disk_bytes"]) or int(summary["bytes"])),
        image_bytes=bytes_text(int(summary["bytes"])),
        hit_ratio=f"{float(summary['hit_ratio']) * 100:.1f} %",
        spent_today=credit(f"credits_spent:{today}"),
        spent_all=credit("credits_spent"),
        saved_today=credit(f"credits_saved:{today}"),
        saved_all=credit("credits_saved"),
        hits=int(summary.get("hits", 0)),
        misses=int(summary.get("misses", 0)),
    )
