"""End-to-end: the real gateway (uvicorn, subprocess) against a fake Stability on loopback.

Most tests share one online gateway and one fake upstream (distinct prompts keep their
keys apart); tests about modes, restarts and tokens start their own gateway.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import (
    FakeStability,
    GatewayProcess,
    error,
    gateway_env,
    image_size,
    not_an_image,
    ok,
    wrong_size,
)

API_KEY = "sk-test-SECRET-gateway-key-0123456789"
CALLER_KEY = "sk-caller-SECRET-abcdef"
ADMIN_TOKEN = "admin-SECRET-token"
ENGINE = "stable-diffusion-xl-1024-v1-0"
PATH = f"/v1/generation/{ENGINE}/text-to-image"


def body(prompt: str, **extra: object) -> dict:
    return {"text_prompts": [{"text": prompt}], "width": 1344, "height": 768, **extra}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake: FakeStability) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def gateway(
    fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("core")
    env = gateway_env(
        tmp / "cache", upstream_url=fake.url, mode="online", api_key=API_KEY,
        backoff_initial=0.05, backoff_jitter=0,
    )  # fmt: skip
    with GatewayProcess(env, log_dir=tmp) as process:
        yield process


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def test_miss_then_hit_calls_upstream_once(client: httpx.Client, fake: FakeStability) -> None:
    first = client.post(PATH, json=body("miss then hit"))
    second = client.post(PATH, json=body("miss then hit"))
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.headers["x-cache-key"] == second.headers["x-cache-key"]
    assert first.json() == second.json()
    assert len(fake.generation_calls()) == 1
    artifact = first.json()["artifacts"][0]
    assert artifact["finishReason"] == "SUCCESS" and isinstance(artifact["seed"], int)
    assert image_size(base64.b64decode(artifact["base64"])) == (1344, 768)


def test_json_and_png_come_from_one_entry(client: httpx.Client, fake: FakeStability) -> None:
    as_json = client.post(PATH, json=body("one entry two formats"))
    as_png = client.post(PATH, json=body("one entry two formats"), headers={"Accept": "image/png"})
    assert as_png.status_code == 200 and as_png.headers["content-type"] == "image/png"
    assert as_png.headers["x-cache"] == "HIT"
    artifact = as_json.json()["artifacts"][0]
    assert as_png.content == base64.b64decode(artifact["base64"])
    assert as_png.headers["seed"] == str(artifact["seed"])
    assert as_png.headers["finish-reason"] == "SUCCESS"
    assert len(fake.generation_calls()) == 1


def test_png_first_then_json(client: httpx.Client, fake: FakeStability) -> None:
    as_png = client.post(PATH, json=body("png first"), headers={"Accept": "image/png"})
    as_json = client.post(PATH, json=body("png first"), headers={"Accept": "application/json"})
    assert (as_png.headers["x-cache"], as_json.headers["x-cache"]) == ("MISS", "HIT")
    assert base64.b64decode(as_json.json()["artifacts"][0]["base64"]) == as_png.content
    assert len(fake.generation_calls()) == 1
    # The gateway always asks upstream for JSON so one entry can serve both formats.
    assert fake.generation_calls()[0].headers["accept"] == "application/json"


def test_gateway_key_goes_upstream_and_caller_key_is_not_in_the_cache_key(
    client: httpx.Client, fake: FakeStability
) -> None:
    a = client.post(PATH, json=body("auth"), headers={"Authorization": f"Bearer {CALLER_KEY}"})
    b = client.post(PATH, json=body("auth"), headers={"Authorization": "Bearer someone-else"})
    assert a.headers["x-cache-key"] == b.headers["x-cache-key"] and b.headers["x-cache"] == "HIT"
    (call,) = fake.generation_calls()
    assert call.headers["authorization"] == f"Bearer {API_KEY}"


def test_defaults_are_filled_in_and_sent_upstream(
    client: httpx.Client, fake: FakeStability
) -> None:
    omitted = client.post(PATH, json=body("defaults"))
    spelled = client.post(
        PATH,
        json={"height": 768, "width": 1344, "cfg_scale": 7.0, "steps": 30, "samples": 1,
              "seed": 0, "text_prompts": [{"weight": 1, "text": "defaults"}]},
    )  # fmt: skip
    assert spelled.headers["x-cache"] == "HIT"
    assert omitted.headers["x-cache-key"] == spelled.headers["x-cache-key"]
    sent = fake.generation_calls()[0].json()
    assert sent["cfg_scale"] == 7 and sent["steps"] == 30 and sent["samples"] == 1
    assert sent["text_prompts"] == [{"text": "defaults", "weight": 1}]


def test_cache_control(client: httpx.Client, fake: FakeStability) -> None:
    miss = client.post(PATH, json=body("controls"), headers={"Cache-Control": "only-if-cached"})
    assert miss.status_code == 504 and miss.json()["name"] == "not_cached"
    assert set(miss.json()) == {"id", "name", "message"}
    assert len(fake.generation_calls()) == 0

    bypass = client.post(PATH, json=body("controls"), headers={"Cache-Control": "no-store"})
    assert bypass.headers["x-cache"] == "BYPASS"
    still_miss = client.post(
        PATH, json=body("controls"), headers={"Cache-Control": "only-if-cached"}
    )
    assert still_miss.status_code == 504  # no-store wrote nothing

    first = client.post(PATH, json=body("controls"))
    refreshed = client.post(PATH, json=body("controls"), headers={"Cache-Control": "no-cache"})
    assert (first.headers["x-cache"], refreshed.headers["x-cache"]) == ("MISS", "MISS")
    assert refreshed.json() != first.json()  # the fake draws a new image per call
    hit = client.post(PATH, json=body("controls"), headers={"Cache-Control": "only-if-cached"})
    assert hit.headers["x-cache"] == "HIT" and hit.json() == refreshed.json()
    assert len(fake.generation_calls()) == 3


@pytest.mark.parametrize(
    ("payload", "status", "name"),
    [
        (body("too wide", width=1920, height=1080), 400, "invalid_sdxl_v1_dimensions"),
        (body("many", samples=11), 400, "invalid_samples"),
        (body("cfg", cfg_scale=99), 400, "bad_request"),
        (body("seed", seed=2**32), 400, "bad_request"),
        (body("style", style_preset="watercolour"), 400, "bad_request"),
        ({"width": 1024, "height": 1024}, 400, "invalid_prompts"),
        ({"text_prompts": [{"text": ""}]}, 400, "invalid_prompts"),
        ({"text_prompts": [{"text": "x" * 2001}]}, 400, "invalid_prompts"),
    ],
)
def test_validation_refuses_before_any_upstream_call(
    client: httpx.Client, fake: FakeStability, payload: dict, status: int, name: str
) -> None:
    response = client.post(PATH, json=payload)
    assert response.status_code == status
    assert response.json()["name"] == name and set(response.json()) == {"id", "name", "message"}
    assert len(response.json()["id"]) == 32
    assert fake.calls == []


def test_png_with_several_samples_is_refused(client: httpx.Client, fake: FakeStability) -> None:
    response = client.post(PATH, json=body("two", samples=2), headers={"Accept": "image/png"})
    assert response.status_code == 400 and response.json()["name"] == "invalid_samples"
    assert fake.calls == []


def test_sdxl_error_lists_the_allowed_sizes(client: httpx.Client) -> None:
    message = client.post(PATH, json=body("wide", width=1920, height=1080)).json()["message"]
    for size in ("1024x1024", "1152x896", "1216x832", "1344x768", "1536x640", "640x1536"):
        assert size in message


@pytest.mark.parametrize(
    ("content", "headers", "status", "name"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "bad_request"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "bad_request"),
        (b"", {}, 400, "bad_request"),
        (b"x" * (10 * 1024 * 1024 + 1), {}, 413, "payload_too_large"),
    ],
)
def test_bad_bodies_get_clear_errors_and_the_gateway_keeps_serving(
    client: httpx.Client, fake: FakeStability, content: bytes, headers: dict, status: int, name: str
) -> None:
    response = client.post(PATH, content=content, headers=headers)
    assert response.status_code == status and response.json()["name"] == name
    assert client.get("/healthz").status_code == 200
    assert client.post(PATH, json=body("after bad body")).status_code == 200


def test_unknown_route_outside_stabilitys_prefixes_is_404_without_upstream(
    client: httpx.Client, fake: FakeStability
) -> None:
    response = client.post("/v3/generation/x/nonsense", json={})
    assert response.status_code == 404 and response.json()["name"] == "not_found"
    assert fake.calls == []


def test_unknown_route_under_v1_is_forwarded_and_answered_by_stability(
    client: httpx.Client, fake: FakeStability
) -> None:
    response = client.post("/v1/generation/x/nonsense", json={})
    assert (response.status_code, response.headers["x-cache"]) == (404, "BYPASS")
    assert response.json()["message"] == "POST /v1/generation/x/nonsense not found"
    (call,) = fake.calls
    assert (call.path, call.headers["authorization"]) == (
        "/v1/generation/x/nonsense",
        f"Bearer {API_KEY}",
    )


def test_upstream_errors_pass_through_and_are_not_cached(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.script(error(400, "invalid_prompts", "One or more prompts contains filtered words."))
    refused = client.post(PATH, json=body("filtered words"))
    assert refused.status_code == 400
    assert refused.json()["name"] == "invalid_prompts"
    assert refused.json()["message"] == "One or more prompts contains filtered words."
    again = client.post(PATH, json=body("filtered words"))
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    assert len(fake.generation_calls()) == 2


@pytest.mark.parametrize("behaviour", [not_an_image(), wrong_size()], ids=["garbage", "size"])
def test_a_bad_upstream_image_is_never_cached_or_served(
    client: httpx.Client, fake: FakeStability, behaviour: object
) -> None:
    prompt = f"corrupt {behaviour!r}"
    fake.script(behaviour)
    bad = client.post(PATH, json=body(prompt))
    assert bad.status_code == 502 and bad.json()["name"] == "bad_upstream_response"
    assert "artifacts" not in bad.text
    cached = client.post(PATH, json=body(prompt), headers={"Cache-Control": "only-if-cached"})
    assert cached.status_code == 504
    good = client.post(PATH, json=body(prompt))
    assert good.status_code == 200 and good.headers["x-cache"] == "MISS"


def test_content_filtered_is_passed_on_but_not_cached(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.script(ok(finish_reason="CONTENT_FILTERED"))
    blurred = client.post(PATH, json=body("blurred"))
    assert blurred.json()["artifacts"][0]["finishReason"] == "CONTENT_FILTERED"
    again = client.post(PATH, json=body("blurred"))
    assert again.headers["x-cache"] == "MISS" and len(fake.generation_calls()) == 2


def test_inspection_open_without_admin_token(client: httpx.Client, fake: FakeStability) -> None:
    made = client.post(PATH, json=body("inspect me", seed=1234))
    key = made.headers["x-cache-key"]
    client.post(PATH, json=body("inspect me", seed=1234))

    stats = client.get("/cache/stats").json()
    assert stats["entries"] >= 1 and stats["hits"] >= 1 and stats["upstream_calls"] >= 1
    assert 0 < stats["hit_ratio"] < 1

    listing = client.get("/cache/entries", params={"limit": 1}).json()
    newest = listing["entries"][0]
    assert newest["key"] == key and listing["total"] >= 1
    for field in ("engine", "prompts", "width", "height", "seed", "bytes", "created_at",
                  "hits", "last_hit_at"):  # fmt: skip
        assert field in newest
    assert newest["prompts"][0]["text"] == "inspect me" and newest["seed"] == 1234
    assert newest["hits"] == 1

    detail = client.get(f"/cache/entries/{key}").json()
    assert detail["width"] == 1344 and detail["engine"] == ENGINE
    image = client.get(f"/cache/entries/{key}/image")
    assert image.headers["content-type"] == "image/png"
    assert image.content == base64.b64decode(made.json()["artifacts"][0]["base64"])

    assert client.delete(f"/cache/entries/{key}").status_code == 200
    gone = client.get(f"/cache/entries/{key}")
    assert gone.status_code == 404 and gone.json()["name"] == "not_found"
    assert client.delete(f"/cache/entries/{key}").status_code == 404
    bad = client.get("/cache/entries", params={"limit": "lots"})
    assert bad.status_code == 400


def test_no_secret_in_logs_inspection_or_keys(
    client: httpx.Client, gateway: GatewayProcess, fake: FakeStability
) -> None:
    client.post(PATH, json=body("secrets"), headers={"Authorization": f"Bearer {CALLER_KEY}"})
    fake.script(error(500), error(500), error(500))
    client.post(PATH, json=body("secrets 2"), headers={"Authorization": f"Bearer {CALLER_KEY}"})
    visible = [
        gateway.logs(),
        client.get("/cache/stats").text,
        client.get("/cache/entries", params={"limit": 1000}).text,
    ]
    for text in visible:
        assert API_KEY not in text and CALLER_KEY not in text
    assert "stability-gateway starting: mode=online" in gateway.logs()


# -- modes, restarts, tokens: their own gateways ---------------------------------------


def test_entries_survive_a_restart(fake: FakeStability, tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "cache", upstream_url=fake.url, mode="online", api_key=API_KEY)
    with GatewayProcess(env, log_dir=tmp_path) as process:
        first = httpx.post(process.url + PATH, json=body("persist"), timeout=30)
        process.restart()
        again = httpx.post(process.url + PATH, json=body("persist"), timeout=30)
        stats = httpx.get(process.url + "/cache/stats").json()
    assert again.headers["x-cache"] == "HIT" and again.json() == first.json()
    assert len(fake.generation_calls()) == 1
    assert stats["misses"] == 1 and stats["hits"] == 1 and stats["upstream_calls"] == 1


def test_offline_mode_needs_no_key_and_never_calls_upstream(
    fake: FakeStability, tmp_path: Path
) -> None:
    # Upstream URL and key both set: offline must still not touch the network.
    env = gateway_env(tmp_path / "cache", upstream_url=fake.url, mode="offline", api_key=API_KEY)
    with GatewayProcess(env, log_dir=tmp_path) as process:
        url = process.url + PATH
        first = httpx.post(url, json=body("offline sunrise", width=768, height=1344))
        png = httpx.post(url, json=body("offline sunrise", width=768, height=1344),
                         headers={"Accept": "image/png"})  # fmt: skip
        other = httpx.post(url, json=body("offline sunset", width=768, height=1344))
        logs = process.logs()
    assert first.status_code == 200 and first.headers["x-cache"] == "OFFLINE"
    assert png.headers["x-cache"] == "HIT"
    data = base64.b64decode(first.json()["artifacts"][0]["base64"])
    assert data == png.content and image_size(data) == (768, 1344)
    assert data != base64.b64decode(other.json()["artifacts"][0]["base64"])
    assert fake.calls == []
    assert "mode=offline" in logs


def test_offline_placeholder_is_deterministic_and_default_mode_is_offline(tmp_path: Path) -> None:
    answers = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        env = gateway_env(tmp_path / run / "cache")  # no key, no mode: offline by default
        with GatewayProcess(env, log_dir=tmp_path / run) as process:
            answers.append(httpx.post(process.url + PATH, json=body("same prompt")).json())
            assert httpx.get(process.url + "/healthz").json()["mode"] == "offline"
    assert answers[0] == answers[1]


def test_replay_serves_only_what_is_cached(fake: FakeStability, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = gateway_env(cache, upstream_url=fake.url, mode="online", api_key=API_KEY)
    with GatewayProcess(env, log_dir=tmp_path) as process:
        recorded = httpx.post(process.url + PATH, json=body("recorded"), timeout=30)
    replay_env = gateway_env(cache, upstream_url=fake.url, mode="replay", api_key=API_KEY)
    with GatewayProcess(replay_env, log_dir=tmp_path) as process:
        hit = httpx.post(process.url + PATH, json=body("recorded"))
        miss = httpx.post(process.url + PATH, json=body("never recorded"))
    assert hit.headers["x-cache"] == "HIT" and hit.json() == recorded.json()
    assert miss.status_code == 504 and miss.json()["name"] == "not_cached"
    assert len(fake.generation_calls()) == 1


def test_admin_token_guards_inspection(tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "cache", admin_token=ADMIN_TOKEN)
    with GatewayProcess(env, log_dir=tmp_path) as process:
        made = httpx.post(process.url + PATH, json=body("guarded"))
        key = made.headers["x-cache-key"]
        paths = ["/cache/stats", "/cache/entries", f"/cache/entries/{key}",
                 f"/cache/entries/{key}/image"]  # fmt: skip
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
                refused = httpx.get(process.url + path, headers=headers)
                assert refused.status_code == 401, path
                assert refused.json()["name"] == "unauthorized"
                assert ADMIN_TOKEN not in refused.text
            allowed = httpx.get(
                process.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            assert allowed.status_code == 200, path
        assert httpx.delete(process.url + f"/cache/entries/{key}").status_code == 401
        # Generation routes and health stay open: the token guards inspection only.
        assert httpx.get(process.url + "/healthz").status_code == 200
        logs = process.logs()
    assert ADMIN_TOKEN not in logs


def test_cli_cache_commands_work_on_the_folder(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with GatewayProcess(gateway_env(cache), log_dir=tmp_path) as process:
        key = httpx.post(process.url + PATH, json=body("cli")).headers["x-cache-key"]
        httpx.post(process.url + PATH, json=body("cli 2"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"STABILITY_GATEWAY_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin",
               "COLUMNS": "200"}  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "gateway", "cache", *args],
            env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip

    stats = json.loads(cli("stats").stdout)
    assert stats["entries"] == 2 and stats["misses"] == 2
    listing = cli("ls").stdout
    assert key[:16] in listing and "cli" in listing
    shown = json.loads(cli("show", key[:12]).stdout)
    assert shown["key"] == key and shown["prompts"][0]["text"] == "cli"
    assert cli("rm", key).returncode == 0
    assert cli("show", key).returncode == 1
    assert "purged 1 entries" in cli("purge", "--yes").stdout  # no terminal: --yes needed
    assert json.loads(cli("stats").stdout)["entries"] == 0


def test_a_realistic_2_6_mb_image_arrives_intact_in_both_formats(
    client: httpx.Client, fake: FakeStability
) -> None:
    """Large answers (megabytes of base64 in JSON) arrive whole and identical."""
    fake.script(ok(noisy=True))
    as_json = client.post(PATH, json=body("large image"))
    as_png = client.post(PATH, json=body("large image"), headers={"Accept": "image/png"})
    again = client.post(PATH, json=body("large image"))
    data = base64.b64decode(as_json.json()["artifacts"][0]["base64"])
    assert len(data) > 2_000_000 and image_size(data) == (1344, 768)
    assert as_png.content == data and int(as_png.headers["content-length"]) == len(data)
    assert again.content == as_json.content  # the memoised JSON body is the same bytes
    assert len(fake.generation_calls()) == 1
