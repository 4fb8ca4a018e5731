"""Where a 2.6 MB miss spends its time inside the gateway, step by step, in process.

    python -m bench.missprofile [--repeats N]

Each step is the gateway's own code on a realistic upstream answer (the fake's noisy
1344x768 PNG, ~2.6 MB, in Stability's v1 JSON), timed with perf_counter over N repeats
(median). The HTTP hops (uvicorn parsing the caller's request, httpx reading the upstream's
answer, writing the answer back) are what `python -m bench --only miss` adds on top: the
difference between the two is in bench/README.md.
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.missprofile")
    parser.add_argument("--repeats", type=int, default=20)
    repeats = parser.parse_args().repeats
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
    rows.append(("route.decode: cut, decode, SHA-256 (now)", timed(
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
