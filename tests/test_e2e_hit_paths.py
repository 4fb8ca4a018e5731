"""End-to-end: the hit paths made faster (issue 14) answer as before, for real.

The real gateway (uvicorn, subprocess) against the fake Stability on loopback: repeated
request bytes take the parse memo (gateway.parse_memo), and, with a memory tier too small
to hold any image, the first hit reads its blob file from the cache folder and checks it;
later image hits are sent from that file by the server with sendfile
(gateway.http.zerocopy), and JSON hits read it on the event loop (cache.local.nowait).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeStability, GatewayProcess, ok, start_on
from tests.fakes.multipart import encode_multipart

API_KEY = "sk-test-SECRET-hits-key-0123456789"
PATH = "/v1/generation/stable-diffusion-v1-6/text-to-image"
CORE = "/v2beta/stable-image/generate/core"
PNG = {"Accept": "image/png"}


def body(prompt: str, **extra: object) -> dict[str, object]:
    return {"text_prompts": [{"text": prompt}], "width": 512, "height": 512, "seed": 11, **extra}


@contextlib.contextmanager
def gateway_client(tmp: Path, fake: FakeStability, **env: object) -> Iterator[httpx.Client]:
    gateway: GatewayProcess = start_on(tmp, fake.url, api_key=API_KEY, **env)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            yield client
    finally:
        gateway.stop()


def test_repeated_bytes_are_answered_as_the_first_time(fake: FakeStability, tmp_path: Path) -> None:
    with gateway_client(tmp_path, fake) as client:
        first = client.post(PATH, json=body("memo e2e"), headers=PNG)
        again = client.post(PATH, json=body("memo e2e"), headers=PNG)
        as_json = client.post(PATH, json=body("memo e2e"))
        elsewhere = client.post(
            PATH, json=body("memo e2e"), headers={**PNG, "X-Cache-Namespace": "team-b"}
        )
        refused = [client.post(PATH, json=body("memo e2e", colour="red")) for _ in range(2)]
    assert [r.headers["x-cache"] for r in (first, again, as_json, elsewhere)] == [
        "MISS", "HIT", "HIT", "MISS",
    ]  # fmt: skip
    assert again.content == first.content and again.headers["content-type"] == "image/png"
    artifact = as_json.json()["artifacts"][0]
    assert base64.b64decode(artifact["base64"]) == first.content
    assert elsewhere.headers["x-cache-key"] != first.headers["x-cache-key"]
    assert len(fake.generation_calls()) == 2
    for response in refused:  # a refused request is refused each time, in Stability's shape
        assert response.status_code == 400
        assert set(response.json()) == {"id", "name", "message"}


def from_file(client: httpx.Client) -> float:
    """The gateway's count of image hits the server sent from the blob's file."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "stability_gateway_hits_sent_from_file":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def test_hits_read_from_the_folder_serve_the_stored_bytes(
    fake: FakeStability, tmp_path: Path
) -> None:
    """With a memory tier too small for the image, an image hit is sent from the blob's
    file by the server (sendfile: counted in /metrics), a JSON hit reads the blob."""
    fake.script(ok(noisy=True), ok(noisy=True))  # ~600 KB: a blob file, not a SQLite row
    with gateway_client(tmp_path, fake, memory_tier_bytes=1024) as client:
        first = client.post(PATH, json=body("cold e2e"), headers=PNG)
        hits = [client.post(PATH, json=body("cold e2e"), headers=PNG) for _ in range(4)]
        assert first.headers["x-cache"] == "MISS" and len(first.content) > 100_000
        assert [h.headers["x-cache"] for h in hits] == ["HIT"] * 4
        assert all(h.content == first.content for h in hits)
        assert hits[0].headers["content-length"] == str(len(first.content))
        assert hits[0].headers["content-type"] == "image/png"
        assert hits[0].headers["finish-reason"] == first.headers["finish-reason"]
        assert hits[0].headers["seed"] == first.headers["seed"]
        assert hits[3].headers["x-cache-key"] == first.headers["x-cache-key"]
        assert hits[3].headers["x-credits-charged"] == "0"
        assert from_file(client) == 3  # the first hit checked the SHA-256: read, in a thread
        as_json = client.post(PATH, json=body("cold e2e"))
        assert as_json.headers["x-cache"] == "HIT"
        assert base64.b64decode(as_json.json()["artifacts"][0]["base64"]) == first.content
        assert from_file(client) == 3
        assert len(fake.generation_calls()) == 1
        # A blob file changed behind the gateway's back is never served, on this path too.
        (blob,) = [p for p in (tmp_path / "cache").rglob("*.val")]
        blob.write_bytes(b"not the image")
        after = client.post(PATH, json=body("cold e2e"), headers=PNG)
    assert after.status_code == 200 and after.headers["x-cache"] == "MISS"
    assert after.content[:8] == b"\x89PNG\r\n\x1a\n" and len(after.content) > 100_000
    assert len(fake.generation_calls()) == 2


def test_v2_image_hits_are_sent_from_the_file_with_their_media_type(
    fake: FakeStability, tmp_path: Path
) -> None:
    fake.script(ok(noisy=True))
    parts = [("prompt", "harbour at dusk"), ("aspect_ratio", "16:9"),
             ("output_format", "jpeg"), ("seed", "31")]  # fmt: skip
    content, headers = encode_multipart(parts, "b-1")
    image = {**headers, "Accept": "image/*"}
    with gateway_client(tmp_path, fake, memory_tier_bytes=1024) as client:
        answers = [client.post(CORE, content=content, headers=image) for _ in range(4)]
        sent = from_file(client)
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "HIT", "HIT"]
    assert all(a.content == answers[0].content for a in answers)
    assert len(answers[0].content) > 100_000  # a blob file of its own
    last = answers[-1]
    assert last.headers["content-type"] == "image/jpeg"
    assert (last.headers["finish-reason"], last.headers["seed"]) == ("SUCCESS", "31")
    assert sent == 2  # the first hit read and checked the bytes
    assert len(fake.generation_calls()) == 1
