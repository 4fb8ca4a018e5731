"""The fakes must be right before gateway tests can trust them: exercise them over real HTTP."""

from __future__ import annotations

import base64
import binascii
import json
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import UnidentifiedImageError

from tests.fakes.gateway_process import GatewayProcess, GatewayStartError, gateway_env
from tests.fakes.images import image_size, open_image, png_bytes
from tests.fakes.stability import (
    FakeStability,
    count_max_in_window,
    error,
    hang,
    invalid_base64,
    key_hash,
    not_an_image,
    ok,
    reset_mid_body,
    status_body,
    truncated_json,
    wrong_size,
)

TEXT = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
IMAGE = "/v1/generation/stable-diffusion-v1-6/image-to-image"
UPSCALE = "/v1/generation/esrgan-v1-x2plus/image-to-image/upscale"
CORE = "/v2beta/stable-image/generate/core"
PROMPT = {"text_prompts": [{"text": "a lighthouse"}]}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStability]:
    with FakeStability() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeStability) -> FakeStability:
    server.reset()
    return server


@pytest.fixture
def client(fake: FakeStability) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5.0) as client:
        yield client


def decoded(artifact: dict[str, object]) -> bytes:
    return base64.b64decode(str(artifact["base64"]), validate=True)


def test_png_helpers() -> None:
    assert image_size(png_bytes(300, 200)) == (300, 200)
    assert len(png_bytes(1024, 1024)) < 20_000
    assert png_bytes(8, 8, seed=1) != png_bytes(8, 8, seed=2)
    assert 1_500_000 < len(png_bytes(1344, 768, noisy=True)) < 3_000_000


def test_text_to_image_json_default(client: httpx.Client) -> None:
    response = client.post(TEXT, json=PROMPT)
    assert response.status_code == 200
    [artifact] = response.json()["artifacts"]
    assert artifact["finishReason"] == "SUCCESS"
    assert artifact["seed"] > 0
    assert image_size(decoded(artifact)) == (512, 512)


def test_text_to_image_samples_and_distinct_images(client: httpx.Client) -> None:
    body = {**PROMPT, "width": 1024, "height": 576, "samples": 2, "seed": 7}
    artifacts = client.post(TEXT, json=body).json()["artifacts"]
    assert [a["seed"] for a in artifacts] == [7, 8]
    first, second = (open_image(decoded(a)) for a in artifacts)
    assert first.size == second.size == (1024, 576)
    assert first.getpixel((0, 0)) != second.getpixel((0, 0))
    # Same request again: same seeds, but a fresh upstream answer is still distinguishable.
    again = client.post(TEXT, json=body).json()["artifacts"]
    assert [a["seed"] for a in again] == [7, 8]
    assert decoded(again[0]) != decoded(artifacts[0])


def test_text_to_image_png(client: httpx.Client) -> None:
    body = {**PROMPT, "width": 768, "height": 512, "seed": 42}
    response = client.post(TEXT, json=body, headers={"Accept": "image/png"})
    assert response.headers["content-type"] == "image/png"
    assert response.headers["finish-reason"] == "SUCCESS"
    assert response.headers["seed"] == "42"
    assert image_size(response.content) == (768, 512)


def test_reused_pixels_give_distinct_sound_pngs(fake: FakeStability, client: httpx.Client) -> None:
    """ok(reuse_pixels=True), the bench's miss load: one encode, the same pixels in every
    answer, yet distinct bytes (distinct blobs in the gateway) that Pillow and the
    gateway's own pixel check both accept."""
    from gateway.png import check_pixels

    fake.default = ok(reuse_pixels=True)
    body = {**PROMPT, "width": 64, "height": 48, "seed": 3}
    answers = [decoded(client.post(TEXT, json=body).json()["artifacts"][0]) for _ in range(2)]
    assert answers[0] != answers[1]
    assert [check_pixels(a) for a in answers] == [(64, 48)] * 2
    first, second = (open_image(a) for a in answers)
    assert first.tobytes() == second.tobytes()


def test_script_then_default(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(ok(finish_reason="CONTENT_FILTERED", seed=5), error(500))
    fake.default = ok(seed=9)
    first = client.post(TEXT, json=PROMPT).json()["artifacts"][0]
    assert (first["finishReason"], first["seed"]) == ("CONTENT_FILTERED", 5)
    assert client.post(TEXT, json=PROMPT).status_code == 500
    assert client.post(TEXT, json=PROMPT).json()["artifacts"][0]["seed"] == 9
    fake.reset()
    assert fake.default == ok()
    assert fake.calls == []


def test_for_prompt_matches_every_time_before_the_script(
    fake: FakeStability, client: httpx.Client
) -> None:
    fake.for_prompt("broken lamp", error(503))
    fake.script(ok(seed=3))
    broken = {"text_prompts": [{"text": "a broken lamp, cinematic"}]}
    assert [client.post(TEXT, json=broken).status_code for _ in range(3)] == [503] * 3
    assert client.post(TEXT, json=PROMPT).json()["artifacts"][0]["seed"] == 3  # script intact
    form = {"text_prompts[0][text]": "another broken lamp"}
    upload = {"init_image": ("i.png", png_bytes(64, 64), "image/png")}
    assert client.post(IMAGE, data=form, files=upload).status_code == 503  # multipart too
    fake.reset()
    assert client.post(TEXT, json=broken).status_code == 200


def test_error_429_v1_body(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(error(429, "rate_limit_exceeded", "slow down", headers={"Retry-After": "2"}))
    response = client.post(TEXT, json=PROMPT)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body.keys() == {"id", "name", "message"}
    assert len(body["id"]) == 32
    assert (body["name"], body["message"]) == ("rate_limit_exceeded", "slow down")


def test_error_body_follows_route_unless_forced(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(error(400, "invalid_prompts", "filtered"), error(400, v2=False))
    v2 = client.post(CORE, data={"prompt": "x"}, headers={"Accept": "application/json"})
    assert v2.json()["errors"] == ["filtered"]
    assert "message" in client.post(CORE, data={"prompt": "x"}).json()


def test_hang_exceeds_client_timeout(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(hang(1.0))
    with pytest.raises(httpx.ReadTimeout):
        client.post(TEXT, json=PROMPT, timeout=0.2)


@pytest.mark.parametrize("accept", ["application/json", "image/png"])
def test_reset_mid_body(fake: FakeStability, client: httpx.Client, accept: str) -> None:
    fake.script(reset_mid_body())
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        client.post(TEXT, json=PROMPT, headers={"Accept": accept})
    assert client.post(TEXT, json=PROMPT).status_code == 200  # the server itself is fine


def test_truncated_json(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(truncated_json())
    response = client.post(TEXT, json=PROMPT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_invalid_base64(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(invalid_base64())
    [artifact] = client.post(TEXT, json=PROMPT).json()["artifacts"]
    with pytest.raises(binascii.Error):
        decoded(artifact)


def test_not_an_image(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(not_an_image(), not_an_image())
    [artifact] = client.post(TEXT, json=PROMPT).json()["artifacts"]
    assert decoded(artifact) == b"this is not a png"
    with pytest.raises(UnidentifiedImageError):
        open_image(decoded(artifact))
    raw = client.post(TEXT, json=PROMPT, headers={"Accept": "image/png"})
    assert raw.content == b"this is not a png"


def test_wrong_size_and_status_body(fake: FakeStability, client: httpx.Client) -> None:
    fake.script(wrong_size(), status_body(502, b"<html>bad gateway</html>", "text/html"))
    [artifact] = client.post(TEXT, json={**PROMPT, "width": 1024}).json()["artifacts"]
    assert image_size(decoded(artifact)) == (64, 64)
    response = client.post(TEXT, json=PROMPT)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == b"<html>bad gateway</html>"


def test_v1_multipart_routes(client: httpx.Client) -> None:
    init = {"init_image": ("init.png", png_bytes(300, 200), "image/png")}
    response = client.post(IMAGE, files=init, data={"text_prompts[0][text]": "x", "samples": "2"})
    assert [image_size(decoded(a)) for a in response.json()["artifacts"]] == [(300, 200)] * 2
    masking = client.post(f"{IMAGE}/masking", files=init, headers={"Accept": "image/png"})
    assert image_size(masking.content) == (300, 200)
    sizes = [
        image_size(decoded(client.post(UPSCALE, files=init, data=data).json()["artifacts"][0]))
        for data in ({}, {"width": "600"}, {"height": "100"})
    ]
    assert sizes == [(600, 400), (600, 400), (150, 100)]
    missing = client.post(IMAGE, data={"samples": "1"})
    assert (missing.status_code, missing.json()["name"]) == (400, "bad_request")


def test_v2beta_core(client: httpx.Client) -> None:
    form = {"prompt": "a lighthouse", "aspect_ratio": "16:9", "seed": "3"}
    as_json = client.post(CORE, data=form, headers={"Accept": "application/json"}).json()
    assert (as_json["finish_reason"], as_json["seed"]) == ("SUCCESS", 3)
    assert image_size(base64.b64decode(as_json["image"])) == (1344, 768)

    raw = client.post(CORE, data={**form, "output_format": "jpeg"}, headers={"Accept": "image/*"})
    assert raw.headers["content-type"] == "image/jpeg"
    assert (raw.headers["finish-reason"], raw.headers["seed"]) == ("SUCCESS", "3")
    image = open_image(raw.content)
    assert (image.format, image.size) == ("JPEG", (1344, 768))
    assert image_size(client.post(CORE, data={"prompt": "x"}).content) == (1024, 1024)


def test_account_routes_reflect_key_hash(client: httpx.Client) -> None:
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    balance = client.get("/v1/user/balance", headers=alice).json()
    assert balance == {"credits": 12.5, "who": key_hash("Bearer sk-alice")}
    assert client.get("/v1/user/account", headers=bob).json()["who"] == key_hash("Bearer sk-bob")
    engines = client.get("/v1/engines/list", headers=alice).json()
    assert len(engines) >= 2
    assert {e["who"] for e in engines} == {key_hash("Bearer sk-alice")}
    assert "sk-alice" not in json.dumps([balance, engines])


def test_calls_are_recorded(fake: FakeStability, client: httpx.Client) -> None:
    missing = client.post("/v1/nope?x=1", content=b"hi", headers={"X-Trace": "abc"})
    assert missing.status_code == 404
    assert missing.json()["name"] == "not_found"
    assert client.get(TEXT).status_code == 404  # wrong method is a 404 too, as anything unknown
    client.post(TEXT, json=PROMPT, headers={"Authorization": "Bearer k"})
    calls = fake.calls
    assert [(c.method, c.path) for c in calls] == [
        ("POST", "/v1/nope"),
        ("GET", TEXT),
        ("POST", TEXT),
    ]
    assert (calls[0].query, calls[0].body, calls[0].headers["x-trace"]) == ("x=1", b"hi", "abc")
    assert calls[2].json() == PROMPT
    assert calls[2].headers["authorization"] == "Bearer k"
    assert calls[0].t <= calls[1].t <= calls[2].t
    assert fake.generation_calls() == [calls[2]]


def test_max_in_window() -> None:
    assert count_max_in_window([], 1.0) == 0
    times = [10.0, 10.5, 10.9, 11.0, 13.0]
    assert count_max_in_window(times, 1.0) == 3  # [10, 11) excludes 11.0
    assert count_max_in_window(times, 1.01) == 4
    assert count_max_in_window(list(reversed(times)), 10.0) == 5


def test_max_in_window_on_calls(fake: FakeStability, client: httpx.Client) -> None:
    for _ in range(3):
        client.post(TEXT, json=PROMPT)
    client.get("/v1/user/balance")  # not a generation call
    assert fake.max_in_window(60.0) == 3
    assert fake.max_in_window(0.0) == 0


def test_concurrency_peak_and_clean_stop() -> None:
    with FakeStability() as fake:
        fake.default = ok(delay=1.0)  # long enough for four threads to overlap surely

        def post(_: int) -> int:
            return httpx.post(f"{fake.url}{TEXT}", json=PROMPT, timeout=5).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(post, range(4))) == [200] * 4
        assert fake.concurrency_peak == 4
        port = fake.port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


STAND_IN = """
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
leaked = sorted(k for k in os.environ if k.startswith("STABILITY_"))
print("stand-in up", leaked, flush=True)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_gateway_process_with_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STABILITY_API_KEY", "sk-developer-real-key")
    env = gateway_env(tmp_path, upstream_url="http://127.0.0.1:1", timeout_seconds=3)
    assert env == {
        "STABILITY_GATEWAY_CACHE_DIR": str(tmp_path),
        "STABILITY_GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1",
        "STABILITY_GATEWAY_TIMEOUT_SECONDS": "3",
    }
    stand_in = [sys.executable, "-c", STAND_IN]
    with GatewayProcess(env, command=stand_in, log_dir=tmp_path) as gateway:
        url = gateway.url
        assert httpx.get(f"{url}/healthz").status_code == 200
        gateway.restart()
        assert gateway.url == url
        assert httpx.get(f"{url}/healthz").status_code == 200
    logs = gateway.logs()
    assert logs.count("stand-in up") == 2  # one log file across restarts
    assert "STABILITY_GATEWAY_CACHE_DIR" in logs
    assert "STABILITY_API_KEY" not in logs  # the developer's own key did not leak in


def test_gateway_process_start_failure_shows_log(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with pytest.raises(GatewayStartError, match=r"(?s)exited with code 3.*boom"):
        GatewayProcess(command=crash, log_dir=tmp_path).start()
