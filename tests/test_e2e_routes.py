"""End-to-end for every route family beyond text-to-image: the real gateway (uvicorn,
subprocess) against the fake Stability on loopback.

v1 multipart (image-to-image, masking, upscale), v2beta generate (core, ultra, sd3), v2beta
upscale/edit/control, job routes polled at /v2beta/results/{id} (creative upscale,
replace-background-and-relight), the account pass-through routes, unknown paths (forwarded
under /v1, /v2beta, /v2; tests/test_e2e_forwarded.py has the rest), and offline
placeholders for each. Tests share one fake and one gateway per
mode; distinct prompts and images keep their keys apart.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import (
    V2_ASPECT_SIZES,
    FakeStability,
    GatewayProcess,
    accepted,
    encode_multipart,
    error,
    image_size,
    key_hash,
    ok,
    open_image,
    png_bytes,
    start_on,
)
from tests.fakes.multipart import Part
from tests.fakes.stability import UPSCALE_4K_SIDE

API_KEY = "sk-test-SECRET-routes-key-0123456789"
I2I = "/v1/generation/stable-diffusion-v1-6/image-to-image"
MASKING = f"{I2I}/masking"
UPSCALE = "/v1/generation/esrgan-v1-x2plus/image-to-image/upscale"
CORE = "/v2beta/stable-image/generate/core"
ULTRA = "/v2beta/stable-image/generate/ultra"
SD3 = "/v2beta/stable-image/generate/sd3"
FAST = "/v2beta/stable-image/upscale/fast"
CREATIVE = "/v2beta/stable-image/upscale/creative"
OUTPAINT = "/v2beta/stable-image/edit/outpaint"
INPAINT = "/v2beta/stable-image/edit/inpaint"
REMOVE_BACKGROUND = "/v2beta/stable-image/edit/remove-background"
SKETCH = "/v2beta/stable-image/control/sketch"
STRUCTURE = "/v2beta/stable-image/control/structure"
STYLE = "/v2beta/stable-image/control/style"
STYLE_TRANSFER = "/v2beta/stable-image/control/style-transfer"
RECOLOR = "/v2beta/stable-image/edit/search-and-recolor"
RELIGHT = "/v2beta/stable-image/edit/replace-background-and-relight"
JSON = {"Accept": "application/json"}
NOT_AN_IMAGE = ("a.png", b"GIF89", "image/png")
IMAGE = {"Accept": "image/*"}


def png_file(width: int, height: int, seed: int) -> tuple[str, bytes, str]:
    return ("picture.png", png_bytes(width, height, seed=seed), "image/png")


def v1_parts(path: str, seed: int) -> list[Part]:
    """A valid request for each v1 multipart route; `seed` makes its image (and key) unique."""
    if path == UPSCALE:
        return [("width", "640"), ("image", png_file(320, 192, seed))]
    parts: list[Part] = [
        ("text_prompts[0][text]", f"harbour {seed}"),
        ("text_prompts[1][text]", "blurry"),
        ("text_prompts[1][weight]", "-1"),
        ("cfg_scale", "7.5"),
        ("init_image", png_file(320, 192, seed)),
    ]
    if path == MASKING:
        parts += [("mask_source", "MASK_IMAGE_BLACK"), ("mask_image", png_file(320, 192, -seed))]
    return parts


V1_OUTPUT = {I2I: (320, 192), MASKING: (320, 192), UPSCALE: (640, 384)}


def post(
    client: httpx.Client,
    path: str,
    parts: list[Part],
    headers: dict[str, str] | None = None,
    boundary: str = "gateway-test-boundary",
) -> httpx.Response:
    body, content_type = encode_multipart(parts, boundary)
    return client.post(path, content=body, headers={**content_type, **(headers or {})})


def decoded(response: httpx.Response) -> bytes:
    body = response.json()
    return base64.b64decode(body["image"] if "image" in body else body["artifacts"][0]["base64"])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake: FakeStability) -> None:
    fake.reset()


def start_gateway(tmp: Path, fake: FakeStability, **env: Any) -> GatewayProcess:
    return start_on(tmp, fake.url, **env)


@pytest.fixture(scope="module")
def client(fake: FakeStability, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    gateway = start_gateway(tmp_path_factory.mktemp("online"), fake, mode="online", api_key=API_KEY)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            yield c
    finally:
        gateway.stop()
    assert API_KEY not in gateway.logs()


@pytest.fixture(scope="module")
def offline(
    fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    gateway = start_gateway(tmp_path_factory.mktemp("offline"), fake, mode="offline")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            yield c
    finally:
        gateway.stop()


# --- v1 multipart ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [I2I, MASKING, UPSCALE])
def test_v1_miss_then_hit_in_both_formats_whatever_the_order_and_boundary(
    client: httpx.Client, fake: FakeStability, path: str
) -> None:
    parts = v1_parts(path, seed=101)
    first = post(client, path, parts, JSON, boundary="first-boundary")
    assert first.status_code == 200, first.text
    second = post(client, path, parts[::-1], {"Accept": "image/png"}, boundary="x-7f3a")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.headers["x-cache-key"] == second.headers["x-cache-key"]
    artifact = first.json()["artifacts"][0]
    assert second.headers["content-type"] == "image/png"
    assert second.content == base64.b64decode(artifact["base64"])
    assert (second.headers["seed"], second.headers["finish-reason"]) == (
        str(artifact["seed"]),
        "SUCCESS",
    )
    assert image_size(second.content) == V1_OUTPUT[path]
    (call,) = fake.generation_calls()
    assert (call.path, call.headers["accept"]) == (path, "application/json")
    assert call.headers["content-type"].startswith("multipart/form-data")
    for name, value in parts:  # every field and file went upstream as sent
        assert (value[1] if isinstance(value, tuple) else value.encode()) in call.body, name


@pytest.mark.parametrize("path", [I2I, MASKING, UPSCALE])
def test_v1_bad_upload_is_refused_before_upstream(
    client: httpx.Client, fake: FakeStability, path: str
) -> None:
    parts = [
        (name, ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"))
        if isinstance(value, tuple)
        else (name, value)
        for name, value in v1_parts(path, seed=102)
    ]
    response = post(client, path, parts)
    assert response.status_code == 400
    body = response.json()
    assert body.keys() == {"id", "name", "message"} and "not a decodable image" in body["message"]
    assert fake.calls == []


# --- v2beta generate -----------------------------------------------------------------------

V2_CASES = [
    (CORE, "16:9", "webp", "WEBP"),
    (ULTRA, "21:9", "jpeg", "JPEG"),
    (SD3, "2:3", "png", "PNG"),
]


@pytest.mark.parametrize(("path", "ratio", "fmt", "pil"), V2_CASES)
def test_v2_one_entry_answers_image_and_json(
    client: httpx.Client, fake: FakeStability, path: str, ratio: str, fmt: str, pil: str
) -> None:
    parts: list[Part] = [
        ("prompt", f"lighthouse for {path}"),
        ("aspect_ratio", ratio),
        ("output_format", fmt),
        ("seed", "77"),
    ]
    raw = post(client, path, parts, IMAGE, boundary="one")
    assert raw.status_code == 200, raw.text
    as_json = post(client, path, parts[::-1], JSON, boundary="two-other")
    assert (raw.headers["x-cache"], as_json.headers["x-cache"]) == ("MISS", "HIT")
    assert raw.headers["content-type"] == f"image/{fmt}"
    assert (raw.headers["finish-reason"], raw.headers["seed"]) == ("SUCCESS", "77")
    picture = open_image(raw.content)
    assert (picture.format, picture.size) == (pil, V2_ASPECT_SIZES[ratio])
    assert as_json.json() == {
        "image": base64.b64encode(raw.content).decode(),
        "finish_reason": "SUCCESS",
        "seed": 77,
    }
    (call,) = fake.generation_calls()
    assert call.headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        (CORE, [("prompt", "x"), ("output_format", "gif")]),
        (ULTRA, [("prompt", "x"), ("strength", "0.5"), ("image", NOT_AN_IMAGE)]),
        (SD3, [("prompt", "x"), ("mode", "image-to-image"), ("strength", "0.5")]),
        (FAST, [("image", png_file(16, 16, 1))]),
    ],
)  # fmt: skip
def test_v2_bad_request_is_refused_before_upstream(
    client: httpx.Client, fake: FakeStability, path: str, parts: list[Part]
) -> None:
    response = post(client, path, parts)
    assert response.status_code == 400
    body = response.json()
    assert body.keys() == {"id", "name", "errors"} and body["name"] == "bad_request"
    assert fake.calls == []


def test_v2_content_moderation_passes_through_unretried(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.script(error(403, "content_moderation", "Your request was flagged"))
    response = post(client, CORE, [("prompt", "something flagged")])
    assert response.status_code == 403
    assert response.json()["errors"] == ["Your request was flagged"]
    assert len(fake.generation_calls()) == 1


def test_v2_upscale_and_edit_routes(client: httpx.Client, fake: FakeStability) -> None:
    fast = [("image", png_file(100, 80, 103)), ("output_format", "jpeg")]
    outpaint = [("image", png_file(128, 128, 104)), ("left", "64"), ("prompt", "more sea")]
    for path, parts, size in ((FAST, fast, (400, 320)), (OUTPAINT, outpaint, (192, 128))):
        miss = post(client, path, parts, IMAGE)
        hit = post(client, path, parts[::-1], JSON)
        assert (miss.status_code, miss.headers["x-cache"], hit.headers["x-cache"]) == (
            200,
            "MISS",
            "HIT",
        ), miss.text
        assert image_size(miss.content) == size and decoded(hit) == miss.content
    assert len(fake.generation_calls()) == 2


# --- v2beta control and the last edits ----------------------------------------------------

NEW_ROUTE_CASES: list[tuple[str, list[Part], tuple[int, int]]] = [
    (SKETCH, [("prompt", "castle"), ("image", png_file(320, 192, 111)),
              ("control_strength", "0.8")], (320, 192)),
    (STRUCTURE, [("prompt", "castle"), ("image", png_file(128, 192, 112))], (128, 192)),
    (STYLE, [("prompt", "fox"), ("image", png_file(64, 64, 113)), ("aspect_ratio", "16:9"),
             ("fidelity", "0.9")], (1344, 768)),
    (STYLE_TRANSFER, [("init_image", png_file(200, 100, 114)),
                      ("style_image", png_file(64, 64, 115))], (200, 100)),
    (RECOLOR, [("prompt", "red"), ("select_prompt", "the boat"),
               ("image", png_file(96, 64, 116))], (96, 64)),
]  # fmt: skip


@pytest.mark.parametrize(("path", "parts", "size"), NEW_ROUTE_CASES)
def test_control_and_new_edit_routes_miss_then_hit_with_one_upstream_call(
    client: httpx.Client, fake: FakeStability, path: str, parts: list[Part], size: tuple[int, int]
) -> None:
    miss = post(client, path, parts, IMAGE, boundary="first")
    hit = post(client, path, parts[::-1], JSON, boundary="second-one")
    assert (miss.status_code, miss.headers["x-cache"], hit.headers["x-cache"]) == (
        200,
        "MISS",
        "HIT",
    ), miss.text
    assert image_size(miss.content) == size and decoded(hit) == miss.content
    (call,) = fake.generation_calls()
    assert (call.path, call.headers["accept"]) == (path, "application/json")


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        (SKETCH, [("prompt", "x"), ("control_strength", "2"), ("image", png_file(64, 64, 1))]),
        (STYLE_TRANSFER, [("init_image", png_file(64, 64, 1))]),
        (RECOLOR, [("prompt", "red"), ("image", png_file(64, 64, 1))]),
        (RELIGHT, [("subject_image", png_file(64, 64, 1))]),
    ],
)  # fmt: skip
def test_control_and_new_edit_routes_refuse_before_upstream(
    client: httpx.Client, fake: FakeStability, path: str, parts: list[Part]
) -> None:
    response = post(client, path, parts)
    assert response.status_code == 400
    assert response.json().keys() == {"id", "name", "errors"}
    assert fake.calls == []


def test_replace_background_and_relight_is_a_job_cached_once_finished(
    client: httpx.Client, fake: FakeStability
) -> None:
    parts: list[Part] = [
        ("subject_image", png_file(160, 96, 117)),
        ("background_prompt", "a beach at dusk"),
        ("light_source_direction", "above"),
        ("light_source_strength", "0.4"),
    ]
    started = post(client, RELIGHT, parts, JSON)  # the fake answers relight with a job, always
    assert (started.status_code, started.headers["x-cache"]) == (200, "MISS"), started.text
    job = started.json()["id"]
    running = client.get(f"/v2beta/results/{job}", headers=IMAGE)
    assert running.status_code == 202
    done = client.get(f"/v2beta/results/{job}", headers=IMAGE)
    assert (done.status_code, image_size(done.content)) == (200, (160, 96))
    again = post(client, RELIGHT, parts[::-1], JSON)
    assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
    poll = client.get(f"/v2beta/results/{again.json()['id']}", headers=IMAGE)
    assert (poll.headers["x-cache"], poll.content) == ("HIT", done.content)
    assert len(fake.generation_calls()) == 1


# --- the same pipeline for every route -------------------------------------------------------


def test_v2_identical_concurrent_requests_share_one_call(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.default = ok(delay=0.3)
    parts: list[Part] = [("prompt", "single flight on core"), ("seed", "5")]

    def send(_: int) -> bytes:
        response = post(client, CORE, parts, IMAGE)
        assert response.status_code == 200
        return response.content

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(send, range(5)))
    assert len(set(answers)) == 1
    assert len(fake.generation_calls()) == 1


def test_v1_multipart_falls_back_to_the_cached_image_when_allowed(
    client: httpx.Client, fake: FakeStability
) -> None:
    parts = v1_parts(I2I, seed=105)
    cached = post(client, I2I, parts, JSON)
    fake.script(error(500), error(500), error(500))
    stale = post(client, I2I, parts, {**JSON, "Cache-Control": "no-cache", "X-Allow-Cached": "1"})
    assert (stale.status_code, stale.headers["x-cache"]) == (200, "STALE")
    assert stale.content == cached.content
    assert len(fake.generation_calls()) == 4  # one, then three attempts (retried)


# --- jobs ------------------------------------------------------------------------------------


def test_creative_upscale_job_is_cached_once_finished(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.script(accepted(polls=1))
    parts = [("prompt", "crisp"), ("image", png_file(80, 64, 106)), ("output_format", "png")]
    started = post(client, CREATIVE, parts, JSON)
    assert (started.status_code, started.headers["x-cache"]) == (200, "MISS")
    job = started.json()["id"]
    running = client.get(f"/v2beta/results/{job}", headers=IMAGE)
    assert (running.status_code, running.json()) == (202, {"id": job, "status": "in-progress"})
    done = client.get(f"/v2beta/results/{job}", headers=IMAGE)
    assert (done.status_code, done.headers["content-type"]) == (200, "image/png")
    assert image_size(done.content) == (UPSCALE_4K_SIDE, round(UPSCALE_4K_SIDE * 64 / 80))
    # The same request again: answered from the cache, in the job's shape, no new job.
    again = post(client, CREATIVE, parts[::-1], JSON)
    assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
    poll = client.get(f"/v2beta/results/{again.json()['id']}", headers=JSON)
    assert (poll.status_code, poll.headers["x-cache"]) == (200, "HIT")
    assert decoded(poll) == done.content
    assert len(fake.generation_calls()) == 1
    assert [c.path for c in fake.calls if c.method == "GET"] == [f"/v2beta/results/{job}"] * 2


def test_a_generate_answered_with_a_job_is_cached_from_its_result(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.script(accepted(status=202, polls=0))
    parts: list[Part] = [("prompt", "answered later"), ("aspect_ratio", "16:9")]
    started = post(client, CORE, parts, IMAGE)
    assert started.status_code == 202
    result = client.get(f"/v2beta/results/{started.json()['id']}", headers=JSON)
    assert (result.status_code, result.headers["x-cache"]) == (200, "MISS")
    later = post(client, CORE, parts, IMAGE)
    assert (later.status_code, later.headers["x-cache"]) == (200, "HIT")
    assert later.content == decoded(result) and image_size(later.content) == (1344, 768)
    assert len(fake.generation_calls()) == 1


def test_results_of_unknown_jobs_pass_through(client: httpx.Client, fake: FakeStability) -> None:
    response = client.get("/v2beta/results/" + "e" * 64, headers=IMAGE)
    assert (response.status_code, response.headers["x-cache"]) == (404, "BYPASS")
    assert response.json()["name"] == "not_found"
    assert len(fake.calls) == 1


# --- pass-through ----------------------------------------------------------------------------


def test_account_routes_pass_through_per_caller(
    fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> None:
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    tmp = tmp_path_factory.mktemp("keyless")
    gateway = start_gateway(tmp, fake, mode="online")  # no key of its own
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            engines = [c.get("/v1/engines/list", headers=h) for h in (alice, alice, bob)]
            balances = [c.get("/v1/user/balance", headers=h) for h in (alice, alice, bob)]
            account = c.get("/v1/user/account", headers=bob)
    finally:
        gateway.stop()
    assert [r.headers["x-cache"] for r in engines] == ["MISS", "HIT", "MISS"]
    callers = [key_hash(h["Authorization"]) for h in (alice, alice, bob)]
    assert [r.json()[0]["who"] for r in engines] == callers
    assert [r.json()["who"] for r in balances] == callers
    assert account.json()["who"] == key_hash("Bearer sk-bob")
    paths = [c.path for c in fake.calls]
    assert paths.count("/v1/engines/list") == 2  # alice's second came from memory
    assert paths.count("/v1/user/balance") == 3  # never cached
    assert "sk-alice" not in gateway.logs()


def test_unknown_paths_are_forwarded_and_others_are_404(
    client: httpx.Client, fake: FakeStability
) -> None:
    outside = client.get("/nope/v1/user", headers={"Authorization": "Bearer sk-x"})
    assert (outside.status_code, outside.json()["name"]) == (404, "not_found")
    assert fake.calls == []
    for method, path in [("GET", "/v1/user/nope"), ("POST", "/v2beta/stable-image/nope/xl")]:
        response = client.request(method, path, headers={"Authorization": "Bearer sk-x"})
        assert (response.status_code, response.headers["x-cache"]) == (404, "BYPASS")
    assert [(c.method, c.path) for c in fake.calls] == [
        ("GET", "/v1/user/nope"),
        ("POST", "/v2beta/stable-image/nope/xl"),
    ]
    assert all(c.headers["authorization"] == f"Bearer {API_KEY}" for c in fake.calls)


# --- offline ---------------------------------------------------------------------------------

OFFLINE_CASES: list[tuple[str, list[Part], dict[str, str], str, tuple[int, int]]] = [
    (I2I, [*v1_parts(I2I, 201), ("samples", "2")], JSON, "PNG", (320, 192)),
    (MASKING, v1_parts(MASKING, 202), JSON, "PNG", (320, 192)),
    (UPSCALE, v1_parts(UPSCALE, 203), {"Accept": "image/png"}, "PNG", (640, 384)),
    (
        CORE,
        [("prompt", "p"), ("aspect_ratio", "16:9"), ("output_format", "webp")],
        IMAGE,
        "WEBP",
        (1344, 768),
    ),
    (
        ULTRA,
        [("prompt", "p"), ("aspect_ratio", "9:21"), ("output_format", "jpeg")],
        JSON,
        "JPEG",
        (640, 1536),
    ),
    (SD3, [("prompt", "p"), ("model", "sd3.5-medium")], IMAGE, "PNG", (1024, 1024)),
    (FAST, [("image", png_file(50, 40, 204))], IMAGE, "PNG", (200, 160)),
    (OUTPAINT, [("image", png_file(64, 64, 205)), ("up", "32")], IMAGE, "PNG", (64, 96)),
    (
        INPAINT,
        [("image", png_file(96, 64, 206)), ("prompt", "p"), ("output_format", "jpeg")],
        JSON,
        "JPEG",
        (96, 64),
    ),
    (
        REMOVE_BACKGROUND,
        [("image", png_file(80, 64, 207)), ("output_format", "webp")],
        IMAGE,
        "WEBP",
        (80, 64),
    ),
    (SKETCH, [("prompt", "p"), ("image", png_file(120, 80, 209))], IMAGE, "PNG", (120, 80)),
    (
        STRUCTURE,
        [("prompt", "p"), ("image", png_file(80, 120, 210)), ("output_format", "jpeg")],
        JSON,
        "JPEG",
        (80, 120),
    ),
    (
        STYLE,
        [("prompt", "p"), ("image", png_file(64, 64, 211)), ("aspect_ratio", "9:16")],
        IMAGE,
        "PNG",
        (768, 1344),
    ),
    (
        STYLE_TRANSFER,
        [
            ("init_image", png_file(150, 100, 212)),
            ("style_image", png_file(64, 64, 213)),
            ("output_format", "webp"),
        ],
        IMAGE,
        "WEBP",
        (150, 100),
    ),
    (
        RECOLOR,
        [("prompt", "p"), ("select_prompt", "s"), ("image", png_file(72, 64, 214))],
        JSON,
        "PNG",
        (72, 64),
    ),
]


@pytest.mark.parametrize(("path", "parts", "accept", "pil", "size"), OFFLINE_CASES)
def test_offline_placeholders_have_the_right_size_and_format(
    offline: httpx.Client,
    fake: FakeStability,
    path: str,
    parts: list[Part],
    accept: dict[str, str],
    pil: str,
    size: tuple[int, int],
) -> None:
    response = post(offline, path, parts, accept)
    assert (response.status_code, response.headers["x-cache"]) == (200, "OFFLINE"), response.text
    if "artifacts" in response.text[:20]:
        images = [base64.b64decode(a["base64"]) for a in response.json()["artifacts"]]
    elif accept == JSON:
        images = [decoded(response)]
    else:
        images = [response.content]
        assert response.headers["content-type"] == f"image/{pil.lower()}"
    assert len(images) == (2 if ("samples", "2") in parts else 1)
    for data in images:
        picture = open_image(data)
        assert (picture.format, picture.size) == (pil, size)
    assert post(offline, path, parts, accept).headers["x-cache"] == "HIT"
    assert fake.calls == []


def test_offline_job_route_and_account_routes(offline: httpx.Client, fake: FakeStability) -> None:
    started = post(offline, CREATIVE, [("prompt", "p"), ("image", png_file(64, 64, 208))], JSON)
    assert (started.status_code, started.headers["x-cache"]) == (200, "OFFLINE")
    result = offline.get(f"/v2beta/results/{started.json()['id']}", headers=IMAGE)
    assert result.status_code == 200  # creative upscale answers "4K": 4096 on the long side
    assert image_size(result.content) == (UPSCALE_4K_SIDE, UPSCALE_4K_SIDE)
    unknown = offline.get("/v2beta/results/" + "a" * 64)
    assert (unknown.status_code, unknown.json()["name"]) == (504, "not_cached")
    assert "errors" in unknown.json()
    engines = offline.get("/v1/engines/list")
    assert engines.status_code == 200
    assert "stable-diffusion-xl-1024-v1-0" in {e["id"] for e in engines.json()}
    balance = offline.get("/v1/user/balance")
    assert (balance.status_code, balance.json()["name"]) == (503, "offline_mode")
    relight = [("subject_image", png_file(96, 80, 215)), ("background_prompt", "forest")]
    started = post(offline, RELIGHT, relight, JSON)
    assert (started.status_code, started.headers["x-cache"]) == (200, "OFFLINE")
    result = offline.get(f"/v2beta/results/{started.json()['id']}", headers=IMAGE)
    assert (result.status_code, image_size(result.content)) == (200, (96, 80))
    assert fake.calls == []
