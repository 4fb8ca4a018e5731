"""Section 7: the entry index at scale: `/cache/stats` and one page of `/cache/entries` with
100,000 entries, against the full scan the store did before it had an index.

The folder is filled directly through the local backend's index (one transaction; every entry
points at the same small image, which a content-addressed store keeps once), so building it
takes seconds, not the hours 100,000 upstream calls would. The gateway then serves it in
offline mode, and each endpoint is asked `REPEATS` times over one keep-alive connection;
p50 and p95 are reported. The scan is what the old DiskStore did for both endpoints: read
every entry's metadata from a diskcache folder, then count, sum and sort them in Python.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path

import diskcache
import httpx

from bench.context import Context
from bench.report import Measurement, SectionResult, Target
from cache.local.blobs import DiskBlobStore
from cache.local.index import Index
from cache.model import Artifact, ArtifactInfo, EntryMeta, prompt_text
from tests.fakes import GatewayProcess, gateway_env, png_bytes

ENTRIES = 100_000
REPEATS = 50
ENGINES = ("stable-diffusion-xl-1024-v1-0", "stable-diffusion-v1-6")
WORDS = ("harbour", "lighthouse", "storm", "gull", "lifeboat", "quay", "nets", "dawn")


def fill(folder: Path, count: int) -> None:
    image = Artifact(png_bytes(64, 64, seed=1), seed=1)
    blobs = DiskBlobStore(folder / "blobs")
    blobs.put_sync(image.sha256, image.data)
    blobs.cache.close()
    index = Index(folder / "index.sqlite3")
    start = time.time() - count
    with index.write() as db:
        for i in range(count):
            summary = {
                "route": "v1/text-to-image",
                "engine": ENGINES[i % 2],
                "prompts": [{"text": f"{WORDS[i % 8]} scene {i}", "weight": 1}],
                "width": 64,
                "height": 64,
                "seed": i,
            }
            meta = EntryMeta(
                key=f"{i:064x}",
                version=uuid.uuid4().hex,
                created_at=start + i,
                artifacts=(ArtifactInfo.of(image),),
                summary=summary,
            )
            Index.insert(db, meta, prompt_text(summary))
    index.close()


def fill_old_layout(folder: Path, count: int) -> diskcache.Cache:
    """The metadata the old store kept: one ("meta", key) dict per entry in diskcache."""
    cache = diskcache.Cache(str(folder))
    with cache.transact():
        for i in range(count):
            cache.set(("meta", f"{i:064x}"), {
                "key": f"{i:064x}", "engine": ENGINES[i % 2], "created_at": float(i),
                "bytes": 100, "prompts": [{"text": f"scene {i}", "weight": 1}],
            })  # fmt: skip
    return cache


def old_scan(cache: diskcache.Cache) -> tuple[int, int, list[dict[str, object]]]:
    """What the old stats() and list_meta() each did: every metadata row, then sort."""
    metas = [cache.get(k) for k in cache.iterkeys() if isinstance(k, tuple) and k[0] == "meta"]
    total_bytes = sum(int(m["bytes"]) for m in metas)
    page = sorted(metas, key=lambda m: float(m["created_at"]), reverse=True)[:50]
    return len(metas), total_bytes, page


def timings(client: httpx.Client, path: str) -> list[float]:
    client.get(path).raise_for_status()  # warm
    out = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        out.append((time.perf_counter() - started) * 1000)
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


def run(ctx: Context) -> SectionResult:
    count = 10_000 if ctx.options.quick else ENTRIES
    section = SectionResult("index", f"the entry index with {count:,} entries")
    folder = ctx.work / "index" / "cache"
    folder.parent.mkdir(parents=True, exist_ok=True)
    ctx.log(f"filling {count:,} entries")
    built = time.monotonic()
    fill(folder, count)
    section.notes.append(f"Filled {count:,} index rows in {time.monotonic() - built:.1f} s.")
    env = gateway_env(folder, mode="offline")
    with (
        GatewayProcess(env, log_dir=folder.parent) as gateway,
        httpx.Client(base_url=gateway.url, timeout=60) as client,
    ):
        stats = client.get("/cache/stats").json()
        assert stats["entries"] == count, stats
        paths = {
            "/cache/stats": "/cache/stats",
            "one page of /cache/entries (50, newest first)": "/cache/entries?limit=50",
            "a page deep in the list (half way)": f"/cache/entries?limit=50&offset={count // 2}",
            "a page filtered by engine": f"/cache/entries?limit=50&engine={ENGINES[1]}",
            "a page searched by prompt text": "/cache/entries?limit=50&q=lighthouse",
        }
        for label, path in paths.items():
            ms = timings(client, path)
            target = (
                Target("<=", 20, " ms")
                if path in ("/cache/stats", "/cache/entries?limit=50")
                else None
            )
            how = f"{REPEATS} GETs over one connection"
            median = statistics.median(ms)
            section.add(Measurement(f"{label}, p50", "gateway (index)", median, "ms", how, target))
            section.add(Measurement(f"{label}, p95", "gateway (index)", p95(ms), "ms",
                                    f"{REPEATS} GETs over one connection"))  # fmt: skip
            section.raw[path] = ms
    ctx.log("filling the old layout for the scan")
    old = fill_old_layout(ctx.work / "index" / "old", count)
    scans = []
    for _ in range(3):
        started = time.perf_counter()
        old_scan(old)
        scans.append((time.perf_counter() - started) * 1000)
    old.close()
    section.add(Measurement("the old full scan (stats, or one page)", "old DiskStore scan",
                            statistics.median(scans), "ms",
                            "median of 3, in process (no HTTP): every metadata row read and "
                            "sorted, as before the index"))  # fmt: skip
    section.raw["old_scan_ms"] = scans
    return section
