"""The multipart routes in process (create_app + httpx.MockTransport): keys, forwarding,
answer formats, errors, jobs and pass-through, without sockets."""

from __future__ import annotations

import base64
import io
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request

from gateway.config import Settings
from gateway.jobs import job_id
from tests.fakes.multipart import encode_multipart as multipart
from tests.support.app import app_client

V1_I2I = "/v1/generation/stable-diffusion-v1-6/image-to-image"
CORE = "/v2beta/stable-image/generate/core"
CREATIVE = "/v2beta/stable-image/upscale/creative"
SECRET = "sk-test-SECRET-key-123456"  # the conftest settings' key


def image(width: int, height: int, fmt: str = "PNG", colour: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (colour, 2, 3)).save(out, format=fmt)
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def read_form(request: httpx.Request) -> tuple[dict[str, str], dict[str, UploadFile]]:
    """What the upstream received, parsed the way a server would."""
    headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    body = request.content

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    fields: dict[str, str] = {}
    files: dict[str, UploadFile] = {}
    async with Request(scope, receive).form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = value
                value.file.seek(0)
                setattr(value, "data", value.file.read())  # noqa: B010 - read before close
            else:
                fields[name] = value
    return fields, files


Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """Answers like Stability (JSON only, as the gateway always asks); `script` overrides."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.forms: list[tuple[dict[str, str], dict[str, UploadFile]]] = []
        self.script: deque[Handler] = deque()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.method == "POST":
            self.forms.append(await read_form(request))
        if self.script:
            return self.script.popleft()(request)
        path = request.url.path
        if path.startswith("/v1/generation/"):
            fields, files = self.forms[-1]
            width, height = size_of(files["init_image"].data)  # type: ignore[attr-defined]
            artifact = {"base64": b64(image(width, height)), "seed": 5, "finishReason": "SUCCESS"}
            return httpx.Response(200, json={"artifacts": [artifact]})
        if path.startswith("/v2beta/stable-image/"):
            fields, _ = self.forms[-1]
            fmt = {"jpeg": "JPEG", "webp": "WEBP"}.get(fields.get("output_format", ""), "PNG")
            return v2_answer(image(1344, 768, fmt) if fields.get("aspect_ratio") == "16:9" else
                             image(1024, 1024, fmt))  # fmt: skip
        return httpx.Response(
            200, json={"path": path, "auth": request.headers.get("authorization")}
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2_answer(data: bytes, seed: int = 7) -> httpx.Response:
    return httpx.Response(200, json={"image": b64(data), "finish_reason": "SUCCESS", "seed": seed})


def v2_error(status: int, name: str) -> Handler:
    body = {"id": "a" * 32, "name": name, "errors": ["refused"]}
    return lambda request: httpx.Response(status, json=body)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


async def make_client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, upstream) as c:
        yield c


@pytest.fixture
async def client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async for c in make_client(settings, upstream):
        yield c


@pytest.fixture
async def keyless(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway without its own key: callers' Authorization goes upstream."""
    async for c in make_client(settings.replace(api_key=""), upstream):
        yield c


@pytest.mark.anyio
async def test_key_ignores_field_order_and_boundary_and_forwards_intact(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    init = ("start.png", image(320, 192), "image/png")
    parts = [
        ("text_prompts[0][text]", "a red boat"),
        ("text_prompts[0][weight]", "1.0"),
        ("cfg_scale", "7.0"),
        ("init_image", init),
        ("seed", "42"),
    ]
    body, headers = multipart(parts, "boundary-one")
    first = await client.post(V1_I2I, content=body, headers=headers)
    body, headers = multipart(list(reversed(parts)), "another-boundary-42")
    second = await client.post(V1_I2I, content=body, headers=headers)
    assert first.status_code == second.status_code == 200, first.text
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.headers["x-cache-key"] == second.headers["x-cache-key"]
    assert first.content == second.content
    (call,) = upstream.calls
    assert call.url.path == V1_I2I and call.headers["accept"] == "application/json"
    assert call.headers["authorization"] == f"Bearer {SECRET}"
    fields, files = upstream.forms[0]
    # Every field as the caller spelled it: no defaults added, "7.0" not rewritten.
    assert fields == {k: v for k, v in parts if isinstance(v, str)}
    assert (files["init_image"].filename, files["init_image"].data) == (init[0], init[1])  # type: ignore[attr-defined]
    answer = first.json()["artifacts"][0]
    assert size_of(base64.b64decode(answer["base64"])) == (320, 192)


@pytest.mark.anyio
async def test_key_follows_the_file_bytes_and_the_fields(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    async def key(data: dict[str, str], colour: int = 0) -> str:
        files = {"init_image": ("x.png", image(64, 64, colour=colour), "image/png")}
        response = await client.post(V1_I2I, data=data, files=files)
        assert response.status_code == 200, response.text
        return response.headers["x-cache-key"]

    base = {"text_prompts[0][text]": "keyed"}
    first = await key(base)
    assert await key({**base, "seed": "0", "samples": "1"}) == first  # defaults spelled out
    assert await key(base, colour=9) != first
    assert await key({**base, "image_strength": "0.5"}) != first
    assert await key({**base, "text_prompts[0][weight]": "0.5"}) != first
    assert len(upstream.calls) == 4


@pytest.mark.anyio
async def test_v2_one_entry_serves_image_and_json(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    form = {"prompt": "harbour at dawn", "aspect_ratio": "16:9", "output_format": "jpeg"}
    raw = await client.post(CORE, data=form, files={"none": ""}, headers={"Accept": "image/*"})
    as_json = await client.post(
        CORE, data=form, files={"none": ""}, headers={"Accept": "application/json"}
    )
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"] == "image/jpeg"
    assert (raw.headers["finish-reason"], raw.headers["seed"]) == ("SUCCESS", "7")
    assert as_json.headers["x-cache"] == "HIT"
    assert as_json.json() == {"image": b64(raw.content), "finish_reason": "SUCCESS", "seed": 7}
    assert len(upstream.calls) == 1
    assert upstream.calls[0].headers["accept"] == "application/json"
    fields, files = upstream.forms[0]
    assert fields == form and files["none"].data == b""  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_v2_answer_of_the_wrong_shape_or_format_is_not_cached(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    form = {"prompt": "checked", "aspect_ratio": "16:9"}
    upstream.script.extend(
        [lambda r: v2_answer(image(1024, 1024)), lambda r: v2_answer(image(1344, 768, "JPEG"))]
    )
    for _ in range(2):
        response = await client.post(CORE, data=form, files={"none": ""})
        assert response.status_code == 502
        assert response.json().keys() == {"id", "name", "errors"}
    assert (await client.post(CORE, data=form, files={"none": ""})).headers["x-cache"] == "MISS"


@pytest.mark.anyio
async def test_v2_validation_errors_have_v2_shape_and_cost_nothing(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    bad = [
        {"data": {"prompt": "x", "aspect_ratio": "4:3"}, "files": {"none": ""}},
        {"data": {"aspect_ratio": "1:1"}, "files": {"none": ""}},
        {"data": {"prompt": "x"}},  # urlencoded, not multipart
        {"data": {"prompt": "x"}, "files": {"image": ("a.png", b"not an image", "image/png")}},
    ]
    for request in bad:
        response = await client.post(CORE, **request)  # type: ignore[arg-type]
        assert response.status_code == 400, response.text
        body = response.json()
        assert body.keys() == {"id", "name", "errors"} and body["name"] == "bad_request"
    response = await client.post(
        "/v2beta/stable-image/generate/sd3", data={"prompt": "x", "output_format": "webp"},
        files={"none": ""},
    )  # fmt: skip
    assert "output_format" in response.json()["errors"][0]
    assert upstream.calls == []


@pytest.mark.anyio
async def test_v1_validation_errors_have_v1_shape(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    init = {"init_image": ("i.png", image(64, 64), "image/png")}
    prompt = {"text_prompts[0][text]": "x"}
    cases = [
        ({"data": {**prompt, "samples": "2"}, "files": init, "headers": {"Accept": "image/png"}},
         "invalid_samples"),
        ({"data": prompt, "files": {"init_image": ("i.png", b"\x89PNG broken", "image/png")}},
         "bad_request"),
        ({"data": {"cfg_scale": "7"}, "files": init}, "invalid_prompts"),
    ]  # fmt: skip
    for request, name in cases:
        response = await client.post(V1_I2I, **request)  # type: ignore[arg-type]
        assert (response.status_code, response.json()["name"]) == (400, name)
        assert response.json().keys() == {"id", "name", "message"}
    body, headers = multipart([*prompt.items(), ("seed", "1"), ("seed", "2")], "dup")
    duplicated = await client.post(V1_I2I, content=body, headers=headers)
    assert "appears more than once" in duplicated.json()["message"]
    assert upstream.calls == []


@pytest.mark.anyio
async def test_content_moderation_is_passed_through_and_not_retried(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.script.append(v2_error(403, "content_moderation"))
    response = await client.post(CORE, data={"prompt": "moderated"}, files={"none": ""})
    assert response.status_code == 403
    assert response.json() == {"id": "a" * 32, "name": "content_moderation", "errors": ["refused"]}
    assert len(upstream.calls) == 1
    upstream.script.extend([v2_error(500, "server_error")] * 2)
    response = await client.post(CORE, data={"prompt": "retried"}, files={"none": ""})
    assert response.status_code == 200 and len(upstream.calls) == 4  # same pipeline: retried


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"id": "abc"}, "abc"),
        (202, {"id": "abc"}, "abc"),
        (202, {"id": "abc", "status": "in-progress"}, "abc"),
        (200, {"id": "abc", "image": "..."}, None),
        (200, {"artifacts": []}, None),
        (400, {"id": "abc", "name": "bad_request", "errors": []}, None),
        (200, {"id": ""}, None),
        (200, ["abc"], None),
    ],
)
def test_job_id(status: int, body: Any, expected: str | None) -> None:
    assert job_id(httpx.Response(status, json=body)) == expected
    assert (
        job_id(httpx.Response(200, content=b'{"id": "x", "pad": "' + b"p" * 5000 + b'"}')) is None
    )


@pytest.mark.anyio
async def test_job_route_result_is_cached_against_the_request(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    job = "f" * 64
    finished = image(256, 256, "WEBP")
    upstream.script.extend(
        [
            lambda r: httpx.Response(202, json={"id": job}),
            lambda r: httpx.Response(202, json={"id": job, "status": "in-progress"}),
            lambda r: v2_answer(finished, seed=11),
        ]
    )
    form = {"prompt": "sharper", "output_format": "webp"}
    files = {"image": ("small.png", image(64, 64), "image/png")}
    started = await client.post(CREATIVE, data=form, files=files)
    assert (started.status_code, started.json(), started.headers["x-cache"]) == (
        202,
        {"id": job},
        "MISS",
    )
    running = await client.get(f"/v2beta/results/{job}", headers={"Accept": "image/*"})
    assert (running.status_code, running.json()["status"]) == (202, "in-progress")
    done = await client.get(f"/v2beta/results/{job}", headers={"Accept": "image/*"})
    assert (done.status_code, done.headers["content-type"], done.content) == (
        200,
        "image/webp",
        finished,
    )
    assert done.headers["seed"] == "11"
    # Polls asked upstream for JSON, whatever the caller wanted.
    assert [c.headers["accept"] for c in upstream.calls[1:]] == ["application/json"] * 2
    again = await client.post(CREATIVE, data=form, files=files)
    assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
    poll = await client.get(
        f"/v2beta/results/{again.json()['id']}", headers={"Accept": "application/json"}
    )
    assert poll.headers["x-cache"] == "HIT"
    assert poll.json() == {"image": b64(finished), "finish_reason": "SUCCESS", "seed": 11}
    assert len(upstream.calls) == 3


@pytest.mark.anyio
async def test_results_of_unknown_jobs_pass_through(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.script.append(
        lambda r: httpx.Response(404, json={"id": "1", "name": "not_found", "errors": ["gone"]})
    )
    response = await client.get("/v2beta/results/" + "0" * 64, headers={"Accept": "image/*"})
    assert (response.status_code, response.headers["x-cache"]) == (404, "BYPASS")
    assert upstream.calls[0].headers["accept"] == "image/*"


@pytest.mark.anyio
async def test_account_routes_per_caller_and_never_cached(
    keyless: httpx.AsyncClient, upstream: Upstream
) -> None:
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    for headers in (alice, bob, alice):
        response = await keyless.get("/v1/engines/list", headers=headers)
        assert response.json()["auth"] == headers["Authorization"]
    assert [c.url.path for c in upstream.calls] == ["/v1/engines/list"] * 2  # alice's was held
    for headers in (alice, alice, bob):
        response = await keyless.get("/v1/user/balance", headers=headers)
        assert (response.json()["auth"], response.headers["x-cache"]) == (
            headers["Authorization"],
            "BYPASS",
        )
    assert len(upstream.calls) == 5


@pytest.mark.anyio
async def test_unknown_paths_outside_stability_prefixes_are_404_without_upstream(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    for method, path in [("GET", "/nope"), ("POST", "/v3/x"), ("GET", "/v2betax/y")]:
        response = await client.request(method, path)
        assert response.status_code == 404, path
        assert response.json().keys() == {"id", "name", "message"}
    # A known route asked with another method keeps its own 405, without an upstream call.
    for method, path in [("POST", "/v2beta/results/abc"), ("GET", CORE)]:
        response = await client.request(method, path)
        assert (response.status_code, response.json()["name"]) == (405, "method_not_allowed")
        assert response.json().keys() == {"id", "name", "errors"}
    assert upstream.calls == []


@pytest.mark.anyio
async def test_unknown_paths_under_stability_prefixes_are_forwarded(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    unknown = [
        ("GET", "/v1/nope"),
        ("POST", "/v2beta/3d/stable-fast-3d"),
        ("DELETE", "/v2/video/jobs/abc"),
    ]
    for method, path in unknown:
        response = await client.request(method, path)
        assert (response.status_code, response.headers["x-cache"]) == (200, "BYPASS"), path
        assert response.json() == {"path": path, "auth": f"Bearer {SECRET}"}
    assert [(c.method, c.url.path) for c in upstream.calls] == unknown
