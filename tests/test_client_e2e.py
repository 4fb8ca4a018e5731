"""The seeds' tests 1-8 for gateway.client, each through the real gateway on loopback.

The gateway runs as a subprocess (GatewayProcess), online with a fake key, in front of a
FakeStability; nothing inside the client, the service or the gateway is mocked. What the
seeds asked of their own client (retries, rate limit, cached fallback) is done here by the
gateway, so these tests check the client and the gateway together: what the caller gets,
what the upstream saw, and what each side logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client import (
    ContentPolicyViolationError,
    GlossaryTranslator,
    ImageGenerationFailureError,
    ImageGenerationService,
    ServerError,
    StabilityAIClient,
    StyleProfile,
    TranslationError,
)
from tests.fakes import FakeStability, GatewayProcess, error, gateway_env, image_size, ok
from tests.fakes.stability import Call

KEY = "sk-test-SECRET-client-e2e-7c1d93ab"
CALLER_KEY = "sk-caller-SECRET-client-e2e-55aa"
ENGINE = "stable-diffusion-xl-1024-v1-0"
PATH = f"/v1/generation/{ENGINE}/text-to-image"
# Fast retries: backoff 0.05 s then 0.1 s, no jitter, a short 429 cool-down.
FAST: dict[str, Any] = {
    "retry_attempts": 3, "backoff_initial": 0.05, "backoff_max": 0.2, "backoff_jitter": 0,
    "cooldown": 0.1, "deadline": 30,
}  # fmt: skip


def start_gateway(fake: FakeStability, tmp: Path, **settings: Any) -> GatewayProcess:
    env = gateway_env(
        tmp / "cache", upstream_url=fake.url, mode="online", api_key=KEY, **FAST, **settings
    )
    return GatewayProcess(env, log_dir=tmp).start()


@pytest.fixture(scope="module")
def gateway(
    shared_fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = start_gateway(shared_fake, tmp_path_factory.mktemp("client-e2e"))
    yield process
    process.stop()
    assert KEY not in process.logs()


def prompts_of(call: Call) -> list[dict[str, Any]]:
    return list(json.loads(call.body)["text_prompts"])


# --- 1. one image ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_1_one_image_right_endpoint_header_and_body(
    gateway: GatewayProcess, fake: FakeStability
) -> None:
    async with StabilityAIClient(CALLER_KEY, base_url=gateway.url) as client:
        image = await client.generate_image(
            "A serene mountain landscape at sunset, cinematic lighting, 4k quality",
            "blurry, low quality, watermark",
            width=1344, height=768, cfg_scale=8, steps=40,
        )  # fmt: skip
    (call,) = fake.generation_calls()
    assert (call.method, call.path) == ("POST", PATH)
    assert call.headers["authorization"] == f"Bearer {KEY}"  # the gateway's own key upstream
    body = json.loads(call.body)
    assert body["text_prompts"] == [
        {"text": "A serene mountain landscape at sunset, cinematic lighting, 4k quality",
         "weight": 1},
        {"text": "blurry, low quality, watermark", "weight": -1},
    ]  # fmt: skip
    assert {k: body[k] for k in ("width", "height", "cfg_scale", "steps", "samples", "seed")} == {
        "width": 1344, "height": 768, "cfg_scale": 8, "steps": 40, "samples": 1, "seed": 0,
    }  # fmt: skip
    assert isinstance(image.data, bytes) and len(image.data) > 1000
    assert image_size(image.data) == (1344, 768)  # decodes (fully) as an image of that size
    assert image.data.startswith(b"\x89PNG")
    assert image.cache == "MISS" and re.fullmatch(r"[0-9a-f]{64}", image.key or "")
    assert image.finish_reason == "SUCCESS" and isinstance(image.seed, int)


@pytest.mark.anyio
async def test_1b_callers_bearer_reaches_stability_through_a_keyless_gateway(
    fake: FakeStability, tmp_path: Path
) -> None:
    """A gateway without a key of its own forwards the caller's Authorization."""
    env = gateway_env(tmp_path / "cache", upstream_url=fake.url, mode="online", **FAST)
    with GatewayProcess(env, log_dir=tmp_path) as forwarding:
        async with StabilityAIClient(CALLER_KEY, base_url=forwarding.url) as client:
            image = await client.generate_image("a keyless gateway")
        assert CALLER_KEY not in forwarding.logs()
    (call,) = fake.generation_calls()
    assert call.headers["authorization"] == f"Bearer {CALLER_KEY}"
    assert image_size(image.data) == (1344, 768)


# --- 2. 429, 429, 200 ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_2_rate_limited_twice_then_ok_is_retried_by_the_gateway(
    gateway: GatewayProcess, fake: FakeStability
) -> None:
    retried = "WARNING gateway.upstream: rate limit exceeded (429), retrying"
    before = gateway.logs().count(retried)
    fake.script(error(429, "rate_limit_exceeded"), error(429, "rate_limit_exceeded"), ok())
    async with StabilityAIClient(base_url=gateway.url) as client:
        image = await client.generate_image("A city street")
    assert image_size(image.data) == (1344, 768)
    assert len(fake.generation_calls()) == 3
    assert gateway.logs().count(retried) - before == 2  # logged by the gateway, at WARNING


# --- 3. content policy -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_3_content_policy_is_raised_logged_and_not_retried(
    gateway: GatewayProcess, fake: FakeStability, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(error(400, "invalid_prompts", "One or more prompts contains filtered words."))
    prompt = "Inappropriate content that violates policy"
    async with StabilityAIClient(base_url=gateway.url) as client:
        with (
            caplog.at_level(logging.WARNING, logger="gateway.client"),
            pytest.raises(ContentPolicyViolationError) as caught,
        ):
            await client.generate_image(prompt)
    assert (caught.value.status, caught.value.name) == (400, "invalid_prompts")
    assert re.fullmatch(r"[0-9a-f]{32}", caught.value.id or "")
    assert "filtered words" in str(caught.value) and caught.value.prompt == prompt
    assert len(fake.generation_calls()) == 1
    assert any(r.levelno == logging.WARNING and prompt in r.getMessage() for r in caplog.records)


# --- 4. ten at a time four -------------------------------------------------------------------

DESCRIPTIONS = [
    "A mountain landscape", "A busy city street", "A peaceful beach", "A forest path",
    "A desert sunset", "A snowy village", "A tropical island", "A modern building",
    "A vintage car", "A flower garden",
]  # fmt: skip


@pytest.mark.anyio
async def test_4_ten_images_four_at_a_time(tmp_path: Path) -> None:
    with FakeStability() as slow:
        slow.default = ok(delay=1)
        gateway = start_gateway(slow, tmp_path)
        try:
            async with StabilityAIClient(base_url=gateway.url) as client:
                service = ImageGenerationService(client, root=tmp_path / "projects")
                config = {
                    "style_modifiers": ["cinematic lighting", "4k quality"],
                    "negative_prompt": "blurry, low quality",
                    "max_concurrent": 4,
                }
                started = time.monotonic()
                results = await service.generate_images_with_fallback(DESCRIPTIONS, config)
                elapsed = time.monotonic() - started
        finally:
            gateway.stop()
        print(f"\ntest 4: 10 images at 1 s each, 4 at a time, took {elapsed:.2f} s")
        assert len(results) == 10 and all(isinstance(r, bytes) for r in results)
        assert all(image_size(r) == (1920, 1080) for r in results if r is not None)
        assert elapsed < 8, f"{elapsed:.2f} s: not parallel (serial takes 10 s)"
        assert slow.concurrency_peak <= 4
        calls = slow.generation_calls()
        assert len(calls) == 10
        sent = sorted(prompts_of(call)[0]["text"] for call in calls)
        assert sent == sorted(f"{d}, cinematic lighting, 4k quality" for d in DESCRIPTIONS)
        assert all(prompts_of(call)[1] == {"text": "blurry, low quality", "weight": -1}
                   for call in calls)  # fmt: skip


# --- 5. prompt engineering, Chinese included -------------------------------------------------


@pytest.mark.anyio
async def test_5_chinese_description_is_sent_in_english_with_the_modifiers(
    gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    modifiers = ["cinematic lighting", "professional photography", "4k quality",
                 "highly detailed", "photorealistic"]  # fmt: skip
    style = StyleProfile(modifiers=modifiers, negative_prompt=["blurry", "low quality"])
    glossary = GlossaryTranslator({"一座寧靜的山景": "A serene mountain landscape"})
    async with StabilityAIClient(base_url=gateway.url) as client:
        service = ImageGenerationService(client, style=style, translator=glossary, root=tmp_path)
        results = await service.generate_descriptions([(1, "一座寧靜的山景"), (2, "一條河")])
    (call,) = fake.generation_calls()  # the untranslatable one never reached the upstream
    assert prompts_of(call) == [
        {"text": "A serene mountain landscape, cinematic lighting, professional photography, "
                 "4k quality, highly detailed, photorealistic", "weight": 1},
        {"text": "blurry, low quality", "weight": -1},
    ]  # fmt: skip
    assert results[0].ok and not results[1].ok
    assert isinstance(results[1].error, TranslationError) and "一條河" in str(results[1].error)


# --- 6. validation of what comes back --------------------------------------------------------


@pytest.mark.anyio
async def test_6_generated_images_are_scaled_to_the_frame_and_validate(
    gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    async with StabilityAIClient(base_url=gateway.url) as client:
        service = ImageGenerationService(client, root=tmp_path)
        (data,) = await service.generate_images_parallel(["A lighthouse, validated"])
    assert data is not None and service.validate_image(data) is True
    assert image_size(data) == (1920, 1080)
    body = json.loads(fake.generation_calls()[0].body)
    assert (body["width"], body["height"]) == (1344, 768)  # SDXL's nearest to 16:9


# --- 7. partial failure ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_7_two_failures_in_ten_are_none_three_raise(
    gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    for failing in ("Batch A image 2,", "Batch A image 7,"):
        fake.for_prompt(failing, error(500))
    async with StabilityAIClient(base_url=gateway.url) as client:
        service = ImageGenerationService(client, root=tmp_path)
        results = await service.generate_images_with_fallback(
            [f"Batch A image {i}" for i in range(10)]
        )
        assert [i for i, r in enumerate(results) if r is None] == [2, 7]
        assert sum(r is not None for r in results) == 8
        assert len(fake.generation_calls()) == 8 + 2 * 3  # each failure retried by the gateway

        fake.reset()
        for failing in ("Batch B image 1,", "Batch B image 4,", "Batch B image 8,"):
            fake.for_prompt(failing, error(500))
        with pytest.raises(ImageGenerationFailureError) as caught:
            await service.generate_images_with_fallback([f"Batch B image {i}" for i in range(10)])
    failure = caught.value
    assert failure.success_rate == 0.7 and len(failure.results) == 10
    assert [r.index for r in failure.failures] == [2, 5, 9]  # 1-based positions
    assert all(isinstance(r.error, ServerError) and r.error.status == 500
               for r in failure.failures)  # fmt: skip


# --- 8. allow_cached ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_8_allow_cached_returns_the_cached_image_when_stability_fails(
    fake: FakeStability, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "refresh": every seed-0 request asks Stability again (keeping the last image as the
    # fallback), so the second call really reaches the failing upstream.
    gateway = start_gateway(fake, tmp_path, random_seed_policy="refresh")
    try:
        async with StabilityAIClient(base_url=gateway.url) as client:
            first = await client.generate_image("a beautiful sunset", allow_cached=True)
            fake.default = error(500)
            with caplog.at_level(logging.WARNING, logger="gateway.client"):
                second = await client.generate_image("a beautiful sunset", allow_cached=True)
            with pytest.raises(ServerError) as without:
                await client.generate_image("a beautiful sunset")
    finally:
        gateway.stop()
    assert (first.cache, second.cache) == ("MISS", "STALE")
    assert second.data == first.data and second.key == first.key
    warnings = [r for r in caplog.records if r.name == "gateway.client"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "a beautiful sunset" in warnings[0].getMessage()
    assert (without.value.status, without.value.name) == (500, "server_error")
    assert len(fake.generation_calls()) == 1 + 3 + 3
    assert "as a fallback (STALE)" in gateway.logs()
