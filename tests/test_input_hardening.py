"""Hostile and odd input, in process (create_app + httpx.MockTransport): every refusal is a
Stability-shaped 4xx given before any upstream call, never a plain 500 (issue 8, items 6-9,
11, 23, 24, 30). The same requests against the real server are in test_e2e_input.py."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from gateway.config import Settings
from tests.support.app import app_client as support_client

T2I = "/v1/generation/stable-diffusion-v1-6/text-to-image"
I2I = "/v1/generation/stable-diffusion-v1-6/image-to-image"
MASKING = f"{I2I}/masking"
UPSCALE = "/v1/generation/esrgan-v1-x2plus/image-to-image/upscale"
CORE = "/v2beta/stable-image/generate/core"
FAST = "/v2beta/stable-image/upscale/fast"
ERASE = "/v2beta/stable-image/edit/erase"
JSON_HEADERS = {"content-type": "application/json"}


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def v1_answer(width: int = 512, height: int = 512, samples: int = 1) -> httpx.Response:
    artifact = {"base64": base64.b64encode(png(width, height)).decode(), "seed": 7}
    return httpx.Response(
        200, json={"artifacts": [{**artifact, "finishReason": "SUCCESS"}] * samples}
    )


class Upstream:
    """Records calls; answers a v1 JSON body with its size, anything else with `answer`."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.calls: list[httpx.Request] = []
        self.answer = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.answer is not None:
            return self.answer(request)
        body = json.loads(request.content)
        return v1_answer(body.get("width", 512), body.get("height", 512), body.get("samples", 1))


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


async def app_client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    # A 500 is an answer here, not an exception in the test.
    async with support_client(settings, upstream, raise_app_exceptions=False) as c:
        yield c


@pytest.fixture
async def client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async for c in app_client(settings, upstream):
        yield c


@pytest.fixture
async def offline(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async for c in app_client(settings.replace(gateway={"mode": "offline"}), upstream):
        yield c


def refused(response: httpx.Response, status: int = 400, *, v2: bool = False) -> dict[str, Any]:
    """The answer is a Stability-shaped error with `status`; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ({"id", "name", "errors"} if v2 else {"id", "name", "message"}), body
    return dict(body)


def message(body: dict[str, Any]) -> str:
    return str(body["errors"][0] if "errors" in body else body["message"])


def multipart_parts(path: str, **fields: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A valid request for each multipart route, plus `fields`."""
    image = ("a.png", png(64, 64), "image/png")
    if path in (I2I, MASKING):
        data = {"text_prompts[0][text]": "a harbour", **fields}
        files = {"init_image": image}
        if path == MASKING:
            data["mask_source"] = "INIT_IMAGE_ALPHA"
        return data, files
    if path == UPSCALE:
        return dict(fields), {"image": ("a.png", png(512, 512), "image/png")}
    if path == CORE:
        return {"prompt": "a harbour", **fields}, {"none": ("", b"", "application/octet-stream")}
    return dict(fields), {"image": image}


# --- 6: non-finite numbers, deep nesting, samples=abc, NUL in a path ------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        b'{"text_prompts":[{"text":"a","weight":1e999}]}',
        b'{"text_prompts":[{"text":"a"}],"extras":{"x":[1e999]}}',
        b'{"text_prompts":[{"text":"a"}],"extras":{"x":{"y":-1e999}}}',
        b'{"text_prompts":[{"text":"a"}],"cfg_scale":-1e999}',
        b'{"text_prompts":[{"text":"a"}],"unknown_field":1e999}',
    ],
    ids=["weight", "extras-list", "extras-nested", "cfg-scale", "unknown-field"],
)
async def test_non_finite_numbers_anywhere_are_400s(
    client: httpx.AsyncClient, upstream: Upstream, content: bytes
) -> None:
    refused(await client.post(T2I, content=content, headers=JSON_HEADERS))
    assert upstream.calls == []


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"text_prompts":[{"text":"a"}],"extras":' + nested(500) + b"}",
        b'{"text_prompts":[{"text":"a"}],"extras":' + nested(40) + b"}",
    ],
    ids=["100000-arrays", "500-in-extras", "40-in-extras"],
)
async def test_deep_nesting_is_a_400(
    client: httpx.AsyncClient, upstream: Upstream, content: bytes
) -> None:
    body = refused(await client.post(T2I, content=content, headers=JSON_HEADERS))
    assert "nest" in message(body)
    assert upstream.calls == []


@pytest.mark.anyio
async def test_moderate_nesting_in_extras_still_goes_upstream(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    content = b'{"text_prompts":[{"text":"a"}],"extras":' + nested(20) + b"}"
    response = await client.post(T2I, content=content, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    assert json.loads(upstream.calls[0].content)["extras"] == json.loads(nested(20))


@pytest.mark.anyio
@pytest.mark.parametrize("path", [I2I, MASKING, UPSCALE, CORE, FAST, ERASE])
@pytest.mark.parametrize("mode", ["online", "offline"])
async def test_samples_not_a_number_is_a_400_on_every_multipart_route(
    settings: Settings, upstream: Upstream, path: str, mode: str
) -> None:
    data, files = multipart_parts(path, samples="abc")
    async for c in app_client(settings.replace(gateway={"mode": mode}), upstream):
        body = refused(await c.post(path, data=data, files=files), v2=path.startswith("/v2beta/"))
    assert body["name"] == "invalid_samples"
    assert upstream.calls == []


@pytest.mark.anyio
async def test_a_nul_in_a_results_id_is_a_400(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    refused(await client.get("/v2beta/results/%00"), v2=True)
    assert upstream.calls == []


# --- 7: result ids cannot reshape the upstream URL -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "job", ["%2E%2E", "abc%3Fx=1", "a%23b", "a%20b", "x" * 129, "%C3%A9t%C3%A9"]
)
async def test_result_ids_are_validated_before_any_upstream_call(
    client: httpx.AsyncClient, upstream: Upstream, job: str
) -> None:
    body = refused(await client.get(f"/v2beta/results/{job}"), v2=True)
    assert body["name"] == "invalid_id"
    assert upstream.calls == []


@pytest.mark.anyio
async def test_a_plain_result_id_still_passes_through(settings: Settings) -> None:
    upstream = Upstream(lambda r: httpx.Response(202, json={"id": "x", "status": "in-progress"}))
    async for c in app_client(settings, upstream):
        response = await c.get("/v2beta/results/" + "ab12_-" * 10)
    assert response.status_code == 202
    assert [str(call.url) for call in upstream.calls] == [
        "https://upstream.test/v2beta/results/" + "ab12_-" * 10
    ]


# --- 8: numbers in ASCII digits only -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "field", "value"),
    [(CORE, "seed", "\u0667"), (I2I, "cfg_scale", "\u0667"), (I2I, "seed", "\uff17"),
     (UPSCALE, "width", "\u0665\u0661\u0662"), (I2I, "text_prompts[0][weight]", "\u0661")],
)  # fmt: skip
async def test_unicode_digits_are_refused(
    client: httpx.AsyncClient, upstream: Upstream, path: str, field: str, value: str
) -> None:
    data, files = multipart_parts(path, **{field: value})
    refused(await client.post(path, data=data, files=files), v2=path.startswith("/v2beta/"))
    assert upstream.calls == []


# --- 9: unknown fields, and what an entry may store ----------------------------------------


@pytest.mark.anyio
async def test_unknown_top_level_fields_are_refused_by_name(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    payload = {"text_prompts": [{"text": "a"}], "cfg_scale": 7, "notes": "x" * 100, "tags": []}
    body = refused(await client.post(T2I, json=payload))
    assert "notes" in message(body) and "tags" in message(body)
    assert upstream.calls == []


@pytest.mark.anyio
async def test_every_documented_field_is_accepted(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    payload = {
        "text_prompts": [{"text": "a", "weight": 1}],
        "height": 512,
        "width": 512,
        "cfg_scale": 7,
        "clip_guidance_preset": "NONE",
        "sampler": "K_EULER",
        "samples": 1,
        "seed": 3,
        "steps": 30,
        "style_preset": "anime",
        "extras": {"k": "v"},
    }
    response = await client.post(T2I, json=payload)
    assert response.status_code == 200, response.text
    assert json.loads(upstream.calls[0].content) == {**payload}


@pytest.mark.anyio
async def test_extras_is_bounded_in_size(client: httpx.AsyncClient, upstream: Upstream) -> None:
    payload = {"text_prompts": [{"text": "a"}], "extras": {"blob": "x" * 70_000}}
    body = refused(await client.post(T2I, json=payload))
    assert "extras" in message(body)
    assert upstream.calls == []


@pytest.mark.anyio
async def test_the_number_of_prompts_is_bounded(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    payload = {"text_prompts": [{"text": "a"}] * 101}
    assert refused(await client.post(T2I, json=payload))["name"] == "invalid_prompts"
    assert upstream.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize("path", [I2I, CORE])
async def test_unknown_multipart_fields_are_forwarded_but_bounded(
    settings: Settings, path: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if path == CORE:
            data = base64.b64encode(png(1024, 1024)).decode()
            return httpx.Response(200, json={"image": data, "finish_reason": "SUCCESS", "seed": 1})
        return v1_answer(64, 64)

    upstream = Upstream(answer)
    v2 = path.startswith("/v2beta/")
    async for c in app_client(settings, upstream):
        data, files = multipart_parts(path, custom_field="y" * 10_000)
        ok = await c.post(path, data=data, files=files)
        data, files = multipart_parts(path, custom_field="y" * 10_001)
        too_long = await c.post(path, data=data, files=files)
    assert ok.status_code == 200, ok.text
    assert b"y" * 10_000 in upstream.calls[0].content  # forwarded as sent
    assert "custom_field" in message(refused(too_long, v2=v2))
    assert len(upstream.calls) == 1


# --- 11: samples on v1 upscale -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("samples", ["2", "0", "1.5"])
async def test_v1_upscale_answers_one_image_so_other_samples_are_refused(
    client: httpx.AsyncClient, upstream: Upstream, samples: str
) -> None:
    data, files = multipart_parts(UPSCALE, samples=samples)
    assert refused(await client.post(UPSCALE, data=data, files=files))["name"] == "invalid_samples"
    assert upstream.calls == []


@pytest.mark.anyio
async def test_v1_upscale_accepts_samples_1(settings: Settings) -> None:
    upstream = Upstream(lambda r: v1_answer(1024, 1024))
    async for c in app_client(settings, upstream):
        data, files = multipart_parts(UPSCALE, samples="1")
        response = await c.post(UPSCALE, data=data, files=files)
    assert response.status_code == 200, response.text
    assert len(upstream.calls) == 1


# --- 23: offline and replay know their engines ---------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["offline", "replay"])
@pytest.mark.parametrize("route", ["text-to-image", "image-to-image", "image-to-image/upscale"])
async def test_unknown_engines_are_404_without_an_upstream(
    settings: Settings, upstream: Upstream, mode: str, route: str
) -> None:
    path = f"/v1/generation/foo-engine/{route}"
    async for c in app_client(settings.replace(gateway={"mode": mode}), upstream):
        if route == "text-to-image":
            response = await c.post(path, json={"text_prompts": [{"text": "a"}]})
        else:
            data, files = multipart_parts(UPSCALE if "upscale" in route else I2I)
            response = await c.post(path, data=data, files=files)
    body = refused(response, 404)
    assert body["name"] == "not_found" and "foo-engine" in body["message"]


@pytest.mark.anyio
async def test_configured_engines_replace_the_default_list(
    settings: Settings, upstream: Upstream
) -> None:
    custom = settings.replace(gateway={"mode": "offline", "engines": ("my-engine",)})
    async for c in app_client(custom, upstream):
        mine = await c.post("/v1/generation/my-engine/text-to-image",
                            json={"text_prompts": [{"text": "a"}]})  # fmt: skip
        default = await c.post(T2I, json={"text_prompts": [{"text": "a"}]})
        listed = await c.get("/v1/engines/list")
    assert (mine.status_code, mine.headers["x-cache"]) == (200, "OFFLINE")
    assert default.status_code == 404
    assert [e["id"] for e in listed.json()] == ["my-engine"]


@pytest.mark.anyio
async def test_online_mode_leaves_engines_to_stability(settings: Settings) -> None:
    refusal = {"id": "1", "name": "not_found", "message": "no such engine"}
    upstream = Upstream(lambda r: httpx.Response(404, json=refusal))
    async for c in app_client(settings, upstream):
        response = await c.post("/v1/generation/foo-engine/text-to-image",
                                json={"text_prompts": [{"text": "a"}]})  # fmt: skip
    assert response.json()["message"] == "no such engine" and len(upstream.calls) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("path", [T2I, I2I])
async def test_placeholders_show_engine_seed_and_sample_index(
    offline: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    import gateway.placeholder

    drawn: list[list[str]] = []
    real = gateway.placeholder.placeholder_image

    def record(width: int, height: int, *, lines: list[str], **kwargs: Any) -> bytes:
        drawn.append(lines)
        return real(width, height, lines=lines, **kwargs)

    module = "text_to_image" if path == T2I else "image_to_image"
    monkeypatch.setattr(f"gateway.routes.{module}.placeholder_image", record)
    if path == T2I:
        payload = {"text_prompts": [{"text": "a lighthouse"}], "seed": 1234, "samples": 2}
        response = await offline.post(T2I, json=payload)
    else:
        data, files = multipart_parts(I2I, seed="1234", samples="2")
        response = await offline.post(I2I, data=data, files=files)
    assert response.status_code == 200, response.text
    assert [a["seed"] for a in response.json()["artifacts"]] == [1234, 1235]
    assert len(drawn) == 2
    for index, lines in enumerate(drawn):
        shown = " | ".join(lines)
        assert "stable-diffusion-v1-6" in shown, shown
        assert f"seed {1234 + index}" in shown, shown
        assert f"sample {index + 1} of 2" in shown, shown


# --- 24: text_prompts of the wrong type ----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("prompts", ["a cat", {"text": "a cat"}, 7, None])
async def test_text_prompts_of_the_wrong_type_say_what_is_expected(
    client: httpx.AsyncClient, prompts: object
) -> None:
    payload = {} if prompts is None else {"text_prompts": prompts}
    body = refused(await client.post(T2I, json=payload))
    assert body["name"] == "invalid_prompts"
    assert "list of {text, weight} objects" in body["message"], body["message"]


@pytest.mark.anyio
async def test_an_empty_prompt_list_still_asks_for_one_prompt(client: httpx.AsyncClient) -> None:
    body = refused(await client.post(T2I, json={"text_prompts": []}))
    assert body["name"] == "invalid_prompts" and "at least one" in body["message"]


# --- 30: 405 keeps Allow -------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "v2"), [(T2I, False), (CORE, True), ("/healthz", False)])
async def test_405_answers_keep_the_allow_header(
    client: httpx.AsyncClient, path: str, v2: bool
) -> None:
    method = "POST" if path == "/healthz" else "GET"
    response = await client.request(method, path)
    refused(response, 405, v2=v2)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed >= ({"GET"} if path == "/healthz" else {"POST"})


# --- 12: a finished job's image is decoded before it is stored ----------------------------


@pytest.mark.anyio
async def test_a_job_result_that_does_not_decode_is_a_502_and_not_stored(
    settings: Settings,
) -> None:
    from tests.fakes.stability import undecodable_png

    job = "f" * 64
    broken = base64.b64encode(undecodable_png(png(256, 256))).decode()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"id": job})
        return httpx.Response(200, json={"image": broken, "finish_reason": "SUCCESS", "seed": 3})

    upstream = Upstream(answer)
    data, files = {"prompt": "crisp"}, {"image": ("a.png", png(64, 64), "image/png")}
    creative = "/v2beta/stable-image/upscale/creative"
    async for c in app_client(settings, upstream):
        started = await c.post(creative, data=data, files=files)
        first = await c.get(f"/v2beta/results/{job}", headers={"Accept": "application/json"})
        again = await c.post(creative, data=data, files=files)
    assert started.json() == {"id": job}
    assert refused(first, 502, v2=True)["name"] == "bad_upstream_response"
    assert again.headers["x-cache"] == "MISS"  # nothing stored: the request starts a new job
    assert [r.method for r in upstream.calls] == ["POST", "GET", "POST"]
