"""How long the gallery takes to render a page with 100,000 entries (and a busy ledger).

    python -m bench.gallery_page                       # 100,000 entries, 20 runs a case
    python -m bench.gallery_page --entries 10000 --runs 5

The entries are written straight into a fresh cache folder's index in one transaction (all
sharing one small PNG blob: a page reads the index only, thumbnails are their own requests),
with prompts from a small vocabulary, three engines, three routes, creation times spread
over 60 days and random hit counts; the ledger gets `--ledger` records over the last 14 days
(what the header's chart reads). Then the real app (offline settings on that folder) answers
GET /gallery in process through httpx's ASGI transport: the time is the server's whole work
(routing, index queries, counters, ledger totals, Jinja rendering), without a network hop.
Prints one line per case: median and slowest of `--runs` requests, and the page's size.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image

from cache.interfaces import LedgerQuery, LedgerRecord
from cache.local import LocalEntryStore
from cache.local.index import Index
from cache.local.ledger import Ledger
from cache.model import Artifact, ArtifactInfo, EntryMeta, prompt_text
from gateway.app import create_app
from gateway.backends import open_backends
from gateway.config import Settings
from gateway.web.filters import day_start

WORDS = (
    "lighthouse", "fox", "harbour", "tram", "glacier", "lantern", "violin", "desert", "koi",
    "balloon", "fern", "map", "storm", "meadow", "castle", "robot", "forest", "river", "neon",
    "city", "mountain", "dawn", "dusk", "fog", "snow",
)  # fmt: skip
ENGINES = ("stable-diffusion-xl-1024-v1-0", "core", "sd3.5-large")
ROUTES = ("v1/text-to-image", "v2beta/stable-image/generate/core",
          "v2beta/stable-image/generate/sd3")  # fmt: skip


def fill(folder: Path, entries: int, ledger_records: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    out = io.BytesIO()
    Image.new("RGB", (64, 36), (90, 90, 140)).save(out, format="PNG")
    artifact = Artifact(out.getvalue(), seed=1)
    store = LocalEntryStore(folder)
    store.blobs.put_sync(artifact.sha256, artifact.data)
    now = time.time()
    with store.index.write() as db:
        for i in range(entries):
            kind = rng.randrange(3)
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            summary = {
                "route": ROUTES[kind],
                "engine": ENGINES[kind],
                "prompts": [{"text": f"{prompt} #{i}", "weight": 1},
                            {"text": "blurry", "weight": -1}],
                "width": 1344,
                "height": 768,
                "seed": i + 1,
                "params": {"cfg_scale": 7, "steps": 30, "samples": 1},
            }  # fmt: skip
            info = ArtifactInfo.of(Artifact(artifact.data, i + 1, digest=artifact.sha256))
            meta = EntryMeta(
                key=uuid.UUID(int=rng.getrandbits(128)).hex * 2,
                version=uuid.uuid4().hex,
                created_at=now - rng.uniform(0, 60 * 86400),
                artifacts=(info,),
                summary=summary,
                hits=rng.choice((0, 0, 0, 1, 2, 5, 40)),
            )
            Index.insert(db, meta, prompt_text(summary))
    store._close()
    (folder / "state").mkdir(parents=True, exist_ok=True)
    ledger = Ledger(folder / "state" / "ledger.sqlite3")
    ledger.append(
        [
            LedgerRecord(now - rng.uniform(0, 14 * 86400), "hit" if rng.random() < 0.75 else "call",
                         ROUTES[0], ENGINES[0], "k" * 64, 200, 1, 2.0)
            for _ in range(ledger_records)
        ]
    )  # fmt: skip
    ledger.close()


CASES = [
    ("first page", "/gallery"),
    ("page 2,000 (offset 47,976)", "/gallery?page=2000"),
    ("search 'lighthouse' (FTS)", "/gallery?q=lighthouse"),
    ("search 'harbour fog' (FTS, rarer)", "/gallery?q=harbour+fog"),
    ("search 'ab' (2 chars: LIKE scan)", "/gallery?q=ab"),
    ("engine filter", "/gallery?engine=core"),
    ("route + date filters", "/gallery?route=v1%2Ftext-to-image&since={since}&until={until}"),
    ("search + engine, page 20", "/gallery?q=fox&engine=core&page=20"),
]


async def measure(folder: Path, runs: int) -> list[tuple[str, float, float, int, int]]:
    settings = Settings().replace(gateway={"mode": "offline"}, cache={"dir": str(folder)})
    app = create_app(settings)
    day = 86400
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 30 * day))
    until = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 10 * day))
    results = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            for name, url in CASES:
                url = url.format(since=since, until=until)
                start = time.perf_counter()
                warm = await c.get(url, headers={"Accept": "text/html"})
                assert warm.status_code == 200, warm.text[:300]
                if not results:  # the process' first page also sums the ledger's closed days
                    cold = (time.perf_counter() - start) * 1000
                    results.append(("first page, a process' first", cold, cold, len(warm.content),
                                    warm.text.count('class="card"')))  # fmt: skip
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    r = await c.get(url, headers={"Accept": "text/html"})
                    times.append((time.perf_counter() - start) * 1000)
                    assert r.status_code == 200
                cards = r.text.count('class="card"')
                results.append((name, statistics.median(times), max(times), len(r.content), cards))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--ledger", type=int, default=100_000, help="ledger records, 14 days")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dir", type=Path, help="cache folder (default: a fresh temp one)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="gallery-bench-")) / "cache"
    start = time.perf_counter()
    fill(folder, args.entries, args.ledger)
    print(f"{args.entries:,} entries and {args.ledger:,} ledger records written to {folder} "
          f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
    print(f"GET /gallery, in process, {args.runs} runs each (after one warm-up):")
    for name, median, worst, size, cards in asyncio.run(measure(folder, args.runs)):
        print(f"  {name:38s} median {median:7.1f} ms   max {worst:7.1f} ms   "
              f"{size / 1024:6.1f} KiB, {cards} cards")  # fmt: skip
    print(f"ledger day totals (what the chart costs when it asks): {asyncio.run(ledger(folder))}")


async def ledger(folder: Path) -> str:
    """The two ledger questions the gallery asks: the closed days of the span (once per
    process) and today's (at most every chart.TODAY_SECONDS)."""
    coordinator = open_backends(Settings().replace(cache={"dir": str(folder)})).coordinator
    today = day_start(time.strftime("%Y-%m-%d", time.gmtime()))
    timings = []
    for since, until in ((today - 13 * 86400, today), (today, None)):
        start = time.perf_counter()
        await coordinator.query_ledger(LedgerQuery(limit=1, since=since, until=until))
        timings.append((time.perf_counter() - start) * 1000)
    await coordinator.close()
    return f"13 closed days {timings[0]:.1f} ms, today {timings[1]:.1f} ms"


if __name__ == "__main__":
    main()
