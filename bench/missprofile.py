"""Where a 2.6 MB miss spends its time inside the gateway, step by step, in process.

    python -m bench.missprofile [--repeats N]
    python -m bench.missprofile --live [--seconds 10] [--small]

Each step is the gateway's own code on a realistic upstream answer (the fake's noisy
1344x768 PNG, ~2.6 MB, in Stability's v1 JSON), timed with perf_counter over N repeats
(median). The HTTP hops (uvicorn parsing the caller's request, httpx reading the upstream's
answer, writing the answer back) are what `python -m bench --only miss` adds on top: the
difference between the two is in bench/README.md.

`--live` measures the whole miss instead: the gateway as users run it (`serve`, the fake
upstream on loopback), one client sending misses one after another while py-spy (not a
project dependency) samples the gateway; each step's share of the samples, times the
gateway's CPU time per miss (from /proc), is printed in milliseconds per miss.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

from cache.local import LocalEntryStore
from cache.model import Artifact
from gateway.generation import Generation, UpstreamRequest
from gateway.images import check_decodes, check_image
from gateway.routes.text_to_image import TextToImage, json_artifacts
from tests.fakes.images import png_bytes


def timed(step: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


# Steps of a miss, each the frames (function names, any line) whose inclusive samples it
# counts. Listed outermost first; a step's figure includes the steps nested in it.
LIVE_STEPS = (
    ("everything the gateway process did", ("Runner.run", "Thread._bootstrap")),
    ("  ASGI app: middlewares, routing, pipeline", ("BodyTimeout.__call__",)),
    ("    parse and validate the request, key", ("TextToImage.parse", "make_key")),
    ("    cache lookup", ("Pipeline._lookup",)),
    ("    answer rendering (JSON reused)", ("Pipeline.respond",)),
    ("    access log line", ("Logger.log",)),
    ("  fetch: lease, limiter, upstream, decode, store", ("Fetcher.fetch.<locals>.work",)),
    ("    single-flight lease (acquire, release)", ("Lease.acquire", "Lease.release")),
    ("    rate-limit slot", ("UpstreamClient._acquire",)),
    ("    upstream HTTP call (httpx)", ("AsyncClient.request",)),
    ("    decode: cut the base64, decode it", ("TextToImage.decode",)),
    ("    image check: CRCs, every pixel row", ("check_image",)),
    ("    store: blob file, index row", ("Fetcher._store",)),
    ("    ledger and counters", ("Fetcher._record",)),
    ("  worker threads (any of the above, off the loop)", ("Thread._bootstrap",)),
)


def live(seconds: float, noisy: bool, gil: bool = False) -> None:
    import subprocess
    from collections import Counter
    from pathlib import Path

    from bench import procstat
    from bench.hitprofile import IDLE_LEAVES, WORK, record
    from bench.servers import FAKE_KEY, UNTHROTTLED, start_gateway
    from bench.upstream import TEXT_TO_IMAGE, generation_body, running_fake
    from tests.fakes import ok

    work = WORK / "missprofile"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    out = Path(work / "stacks.txt")
    sent = [0]
    stop = [False]
    with running_fake(ok(noisy=noisy, reuse_pixels=True)) as fake:
        gateway = start_gateway(work, "gateway", fake.url, rate=UNTHROTTLED)
        assert gateway.pid is not None
        headers = {"Accept": "application/json", "Authorization": f"Bearer {FAKE_KEY}"}

        def load() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop[0]:
                    body = generation_body("a live profile", 9_000_000 + sent[0])
                    client.post(f"{gateway.url}{TEXT_TO_IMAGE}", json=body, headers=headers)
                    sent[0] += 1

        import threading

        loader = threading.Thread(target=load)
        try:
            loader.start()
            time.sleep(2)  # warm up
            first, cpu = sent[0], sum(procstat.cpu_seconds(gateway.pid))
            record(gateway.pid, seconds, out, gil=gil)
            misses, cpu = sent[0] - first, sum(procstat.cpu_seconds(gateway.pid)) - cpu
        finally:
            stop[0] = True
            loader.join()
            gateway.stop()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES) or frames[-1].startswith("Runner.run"):
            continue
        total += int(count)
        for name in {frame.split(" (")[0] for frame in frames}:
            inclusive[name] += int(count)
    per_miss = 1000 * cpu / misses
    print(f"{misses} misses in {seconds:g} s, one at a time; gateway CPU {per_miss:.2f} ms per "
          f"miss ({'2.6 MB' if noisy else 'small'} image); {total} busy samples")  # fmt: skip
    if gil:
        print("(only samples of the thread holding the GIL; shares are of those samples)")
    else:
        print("(py-spy counts a thread waiting for the GIL as busy; shares are of all samples)")
    width = max(len(step) for step, _ in LIVE_STEPS)
    for step, names in LIVE_STEPS:
        samples = max(inclusive[name] for name in names) if len(names) == 1 else sum(
            inclusive[name] for name in names)  # fmt: skip
        if step.startswith("everything"):
            samples = total
        print(f"{step.ljust(width)}  {per_miss * samples / total:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.missprofile")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--live", action="store_true", help="profile the running gateway")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--small", action="store_true", help="--live with the small image")
    parser.add_argument("--gil", action="store_true", help="--live: only the GIL holder's samples")
    args = parser.parse_args()
    if args.live:
        live(args.seconds, noisy=not args.small, gil=args.gil)
        return
    repeats = args.repeats
    png = png_bytes(1344, 768, seed=3, noisy=True)
    text = base64.b64encode(png).decode()
    body = json.dumps({"artifacts": [{"base64": text, "seed": 5, "finishReason": "SUCCESS"}]})
    raw = body.encode()
    response = httpx.Response(200, content=raw, headers={"content-type": "application/json"})
    route = TextToImage({})

    generation = Generation(
        route="v1/text-to-image", engine="e", key="k" * 64,
        upstream=UpstreamRequest("POST", "/"), want="json", expected_size=(1344, 768),
    )  # fmt: skip

    rows: list[tuple[str, float]] = []
    rows.append(("json.loads of the 3.5 MB answer (before)", timed(lambda: json.loads(raw),
                                                                  repeats)))  # fmt: skip
    rows.append(("base64 decode (binascii, strict: before)", timed(
        lambda: __import__("binascii").a2b_base64(text, strict_mode=True), repeats)))  # fmt: skip
    rows.append(("base64 decode (pybase64, strict: now)", timed(
        lambda: __import__("pybase64").b64decode(text, validate=True), repeats)))  # fmt: skip
    rows.append(("SHA-256 of the image", timed(lambda: hashlib.sha256(png).digest(), repeats)))
    rows.append(("route.decode: cut the base64 out, decode it (now)", timed(
        lambda: route.decode(response, generation), repeats)))  # fmt: skip
    rows.append(("PNG chunk CRCs with Pillow verify() (before)", timed(
        lambda: check_image(png, expected_size=(1344, 768)), repeats)))  # fmt: skip
    rows.append(("every pixel with Pillow load() (before)", timed(lambda: check_decodes(png),
                                                                 repeats)))  # fmt: skip
    rows.append(("CRCs + every pixel row, gateway.png (now)", timed(
        lambda: check_image(png, expected_size=(1344, 768), full=True), repeats)))  # fmt: skip
    artifact = Artifact(png, 5)
    rows.append(("render the JSON answer (upstream's base64 reused)", timed(
        lambda: json_artifacts([artifact]), repeats)))  # fmt: skip

    async def store() -> float:
        with tempfile.TemporaryDirectory() as folder:
            entries = LocalEntryStore(folder)
            samples = []
            for i in range(repeats):
                fresh = Artifact(png[:-1] + bytes([i % 256]), 5)  # a new blob each time
                started = time.perf_counter()
                await entries.put(f"{i:064x}", [fresh], {"route": "v1/text-to-image"})
                samples.append((time.perf_counter() - started) * 1000)
            await entries.close()
            return statistics.median(samples)

    rows.append(("store: blob file + index row (after the answer)", asyncio.run(store())))
    width = max(len(name) for name, _ in rows)
    print(f"{'step'.ljust(width)}  median ms ({repeats} runs, {len(png):,} B image)")
    for name, ms in rows:
        print(f"{name.ljust(width)}  {ms:8.2f}")


if __name__ == "__main__":
    main()
