"""The v2beta control routes and the last edit routes in process (create_app +
httpx.MockTransport): cached like the other v2beta routes, refused before any upstream call
when Stability would refuse them, answers of the wrong shape never stored, the relight job,
and offline placeholders."""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from gateway.config import Settings
from tests.fakes.multipart import Part
from tests.fakes.multipart import encode_multipart as multipart
from tests.support.app import app_client
from tests.support.errors import stability_error
from tests.support.images import image, size_of
from tests.test_routes_multipart import read_form

V2 = "/v2beta/stable-image"
SKETCH, STRUCTURE = f"{V2}/control/sketch", f"{V2}/control/structure"
STYLE, TRANSFER = f"{V2}/control/style", f"{V2}/control/style-transfer"
RECOLOR = f"{V2}/edit/search-and-recolor"
RELIGHT = f"{V2}/edit/replace-background-and-relight"
ASPECTS = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640)}
SOURCES = {TRANSFER: "init_image", RELIGHT: "subject_image"}
JSON = {"Accept": "application/json"}
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def upload(width: int, height: int, colour: int = 1) -> tuple[str, bytes, str]:
    return ("in.png", image(width, height, colour=colour), "image/png")


class Upstream:
    """Answers like Stability: control/style in its aspect ratio, every other route at its
    input's size (scaled by `scale`, to fake an answer of another shape); relight with a job
    whose result is ready at the second poll."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.forms: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.jobs: dict[str, tuple[bytes, int]] = {}
        self.scale = (1.0, 1.0)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        path = request.url.path
        if path.startswith("/v2beta/results/"):
            job = path.rsplit("/", 1)[1]
            data, polls = self.jobs[job]
            self.jobs[job] = (data, polls + 1)
            if polls == 0:
                return httpx.Response(202, json={"id": job, "status": "in-progress"})
            return answer(data)
        fields, files = await read_form(request)
        self.forms.append((fields, files))
        fmt = FORMATS[fields.get("output_format", "png")]
        if path == STYLE:
            width, height = ASPECTS[fields.get("aspect_ratio", "1:1")]
        else:
            width, height = size_of(files[SOURCES.get(path, "image")].data)
        width, height = round(width * self.scale[0]), round(height * self.scale[1])
        data = image(width, height, fmt, colour=len(self.calls))
        if path == RELIGHT:
            job = secrets.token_hex(32)
            self.jobs[job] = (data, 0)
            return httpx.Response(200, json={"id": job})
        return answer(data)


def answer(data: bytes) -> httpx.Response:
    payload = {"image": base64.b64encode(data).decode(), "finish_reason": "SUCCESS", "seed": 9}
    return httpx.Response(200, json=payload)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, upstream) as c:
        yield c


async def post(client: httpx.AsyncClient, path: str, parts: list[Part],
               headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    body, content_type = multipart(parts, "b-" + secrets.token_hex(4))
    return await client.post(path, content=body, headers={**content_type, **(headers or {})})


# route, a valid request, the answer's format and size
CASES: list[tuple[str, list[Part], str, tuple[int, int]]] = [
    (SKETCH, [("prompt", "a castle"), ("control_strength", "0.6"), ("image", upload(320, 192)),
              ("seed", "5")], "PNG", (320, 192)),
    (STRUCTURE, [("prompt", "a castle"), ("image", upload(200, 300)),
                 ("output_format", "jpeg"), ("style_preset", "anime")], "JPEG", (200, 300)),
    (STYLE, [("prompt", "a fox"), ("image", upload(64, 64)), ("aspect_ratio", "21:9"),
             ("fidelity", "0.3"), ("output_format", "webp")], "WEBP", (1536, 640)),
    (TRANSFER, [("init_image", upload(300, 150)), ("style_image", upload(64, 128, 7)),
                ("style_strength", "1"), ("change_strength", "0.1")], "PNG", (300, 150)),
    (RECOLOR, [("prompt", "bright red"), ("select_prompt", "the car"),
               ("image", upload(96, 64)), ("grow_mask", "20")], "PNG", (96, 64)),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "parts", "pil", "size"), CASES, ids=lambda c: str(c)[-20:])
async def test_miss_then_hit_with_one_upstream_call(
    client: httpx.AsyncClient,
    upstream: Upstream,
    path: str,
    parts: list[Part],
    pil: str,
    size: tuple[int, int],
) -> None:
    miss = await post(client, path, parts, {"Accept": "image/*"})
    hit = await post(client, path, parts[::-1], JSON)
    assert (miss.status_code, miss.headers["x-cache"], hit.headers["x-cache"]) == (
        200,
        "MISS",
        "HIT",
    ), miss.text
    picture = Image.open(io.BytesIO(miss.content))
    assert (picture.format, picture.size) == (pil, size)
    assert base64.b64decode(hit.json()["image"]) == miss.content
    assert len(upstream.calls) == 1
    (call,) = upstream.calls
    assert (call.url.path, call.headers["accept"]) == (path, "application/json")
    fields, files = upstream.forms[0]
    for name, value in parts:  # every field and upload went upstream as sent
        if isinstance(value, tuple):
            assert files[name].data == value[1], name
        else:
            assert fields[name] == value, name


REFUSED: list[tuple[str, list[Part], str]] = [
    (SKETCH, [("prompt", "p"), ("control_strength", "1.5"), ("image", upload(64, 64))],
     "control_strength"),
    (SKETCH, [("prompt", "p"), ("image", upload(32, 64))], "image"),
    (STRUCTURE, [("image", upload(64, 64))], "prompt: required"),
    (STYLE, [("prompt", "p"), ("image", upload(64, 64)), ("fidelity", "-0.1")], "fidelity"),
    (STYLE, [("prompt", "p"), ("image", upload(64, 64)), ("aspect_ratio", "7:3")],
     "aspect_ratio"),
    (TRANSFER, [("init_image", upload(64, 64))], "style_image: required"),
    (TRANSFER, [("init_image", upload(64, 64)), ("style_image", upload(64, 64)),
                ("change_strength", "0.05")], "change_strength"),
    (RECOLOR, [("prompt", "red"), ("image", upload(64, 64))], "select_prompt: required"),
    (RECOLOR, [("prompt", "red"), ("select_prompt", "car"), ("grow_mask", "21"),
               ("image", upload(64, 64))], "grow_mask"),
    (RELIGHT, [("subject_image", upload(64, 64))], "background_prompt, background_reference"),
    (RELIGHT, [("subject_image", upload(64, 64)), ("background_prompt", "beach"),
               ("light_source_strength", "0.5")], "light_source_strength"),
    (RELIGHT, [("subject_image", upload(64, 64)), ("background_prompt", "beach"),
               ("light_source_direction", "sideways")], "light_source_direction"),
    (RELIGHT, [("subject_image", upload(64, 64)), ("background_prompt", "beach"),
               ("keep_original_background", "yes")], "keep_original_background"),
    (RELIGHT, [("image", upload(64, 64)), ("background_prompt", "beach")], "image"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "parts", "says"), REFUSED, ids=lambda c: str(c)[-24:])
async def test_refused_before_any_upstream_call(
    client: httpx.AsyncClient, upstream: Upstream, path: str, parts: list[Part], says: str
) -> None:
    response = await post(client, path, parts)
    assert stability_error(response, 400, v2=True) == "bad_request"
    assert says in response.json()["errors"][0]
    assert upstream.calls == []


@pytest.mark.anyio
async def test_either_background_and_either_light_are_accepted(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    subject = ("subject_image", upload(80, 64))
    by_reference = [
        subject,
        ("background_reference", upload(64, 64, 3)),
        ("light_reference", upload(64, 64, 4)),
        ("light_source_strength", "0.2"),
    ]
    by_words = [
        subject,
        ("background_prompt", "beach"),
        ("light_source_direction", "left"),
        ("light_source_strength", "0.2"),
        ("keep_original_background", "true"),
    ]
    for parts in (by_reference, by_words):  # fmt: skip
        response = await post(client, RELIGHT, parts, JSON)
        assert (response.status_code, response.headers["x-cache"]) == (200, "MISS")
    assert len(upstream.calls) == 2


@pytest.mark.anyio
async def test_an_answer_that_does_not_keep_the_inputs_aspect_is_never_stored(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    parts: list[Part] = [("prompt", "a castle"), ("image", upload(320, 160)), ("seed", "1")]
    upstream.scale = (1.0, 2.0)  # a 320x320 answer for a 2:1 input
    bad = await post(client, SKETCH, parts)
    assert stability_error(bad, 502, v2=True) == "bad_upstream_response"
    assert "expected the input's aspect" in bad.json()["errors"][0]
    upstream.scale = (1.5, 1.5)  # another size, the same aspect: accepted
    good = await post(client, SKETCH, parts)
    assert (good.status_code, size_of(good.content)) == (200, (480, 240))
    assert (await post(client, SKETCH, parts)).headers["x-cache"] == "HIT"
    assert len(upstream.calls) == 2


@pytest.mark.anyio
async def test_relight_is_a_job_cached_once_its_result_is_polled(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    parts: list[Part] = [("subject_image", upload(160, 120)), ("background_prompt", "a beach"),
                         ("output_format", "jpeg")]  # fmt: skip
    started = await post(client, RELIGHT, parts, JSON)
    assert (started.status_code, started.headers["x-cache"]) == (200, "MISS")
    job = started.json()["id"]
    running = await client.get(f"/v2beta/results/{job}", headers={"Accept": "image/*"})
    assert (running.status_code, running.json()["status"]) == (202, "in-progress")
    done = await client.get(f"/v2beta/results/{job}", headers={"Accept": "image/*"})
    assert (done.status_code, done.headers["content-type"]) == (200, "image/jpeg")
    assert size_of(done.content) == (160, 120)
    again = await post(client, RELIGHT, parts[::-1], JSON)
    assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
    poll = await client.get(f"/v2beta/results/{again.json()['id']}", headers=JSON)
    assert poll.headers["x-cache"] == "HIT"
    assert base64.b64decode(poll.json()["image"]) == done.content
    assert [c.url.path for c in upstream.calls] == [RELIGHT] + [f"/v2beta/results/{job}"] * 2


OFFLINE: list[tuple[str, list[Part], str, tuple[int, int]]] = [
    *CASES,
    (RELIGHT, [("subject_image", upload(200, 120)), ("background_prompt", "a beach"),
               ("output_format", "webp")], "WEBP", (200, 120)),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "parts", "pil", "size"), OFFLINE, ids=lambda c: str(c)[-20:])
async def test_offline_placeholders_have_the_answers_size_and_format(
    settings: Settings,
    upstream: Upstream,
    path: str,
    parts: list[Part],
    pil: str,
    size: tuple[int, int],
) -> None:
    async with app_client(settings.replace(gateway={"mode": "offline"}), upstream) as c:
        response = await post(c, path, parts, {"Accept": "image/*"})
        assert (response.status_code, response.headers["x-cache"]) == (200, "OFFLINE")
        data = response.content
        if path == RELIGHT:  # a job: its id, then the placeholder from the poll
            result = await c.get(f"/v2beta/results/{response.json()['id']}")
            data = result.content
        again = await post(c, path, parts, {"Accept": "image/*"})
    picture = Image.open(io.BytesIO(data))
    assert (picture.format, picture.size) == (pil, size)
    assert again.headers["x-cache"] == "HIT"
    assert upstream.calls == []
