"""Unit tests of gateway.client: the client against a mocked transport (respx), and the
pure parts (sizes, styles, translation, prompts, validation, assets).

Everything that crosses a process boundary is tested for real in test_client_e2e.py and
test_client_command.py; here the transport is mocked, e.g. to show the client sends the
seeds' request to Stability itself and does not retry anything.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

import gateway.client as client_package
from gateway.client import (
    SDXL_V1_SIZES,
    APIError,
    AssetStore,
    ContentPolicyViolationError,
    GlossaryTranslator,
    ImageGenerationError,
    ImageGenerationFailureError,
    ImageGenerationService,
    ImageResult,
    ImageValidationError,
    NetworkError,
    RateLimitError,
    RequestRejectedError,
    ServerError,
    StabilityAIClient,
    StyleError,
    StyleParams,
    StyleProfile,
    TranslationError,
    nearest_sdxl_size,
)
from gateway.client.assets import AssetRow
from gateway.client.service import check_project_id, script_descriptions
from gateway.client.sizes import parse_size
from gateway.config import load_settings
from tests.fakes.images import image_bytes, png_bytes

STABILITY = "https://api.stability.ai"
TEXT = f"{STABILITY}/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
KEY = "sk-unit-SECRET-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]
FULLWIDTH_COMMA = "\N{FULLWIDTH COMMA}"


def answer(data: bytes | None = None, **artifact: object) -> dict[str, object]:
    encoded = base64.b64encode(data or png_bytes(1344, 768, seed=3)).decode()
    return {"artifacts": [{"base64": encoded, "seed": 42, "finishReason": "SUCCESS", **artifact}]}


def stability_client(**kwargs: object) -> StabilityAIClient:
    return StabilityAIClient(KEY, base_url=STABILITY, **kwargs)  # type: ignore[arg-type]


# --- The client ----------------------------------------------------------------------------


@pytest.mark.anyio
@respx.mock
async def test_sends_the_seeds_request_with_bearer_auth_to_stability() -> None:
    route = respx.post(TEXT).mock(return_value=httpx.Response(200, json=answer()))
    async with stability_client() as client:
        image = await client.generate_image(
            "A serene mountain landscape at sunset, cinematic lighting, 4k quality",
            "blurry, low quality, watermark",
            style_preset="photographic",
        )
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "application/json"
    assert "x-allow-cached" not in request.headers
    assert json.loads(request.content) == {
        "text_prompts": [
            {"text": "A serene mountain landscape at sunset, cinematic lighting, 4k quality",
             "weight": 1},
            {"text": "blurry, low quality, watermark", "weight": -1},
        ],
        "cfg_scale": 8, "height": 768, "width": 1344, "samples": 1, "steps": 40, "seed": 0,
        "style_preset": "photographic",
    }  # fmt: skip
    assert Image.open(io.BytesIO(image.data)).size == (1344, 768)
    assert (image.seed, image.finish_reason, image.cache, image.credits) == (
        42,
        "SUCCESS",
        None,
        None,
    )


@pytest.mark.anyio
@respx.mock
async def test_allow_cached_header_engine_and_no_negative_prompt() -> None:
    path = f"{STABILITY}/v1/generation/stable-diffusion-v1-6/text-to-image"
    route = respx.post(path).mock(return_value=httpx.Response(200, json=answer()))
    async with stability_client() as client:
        await client.generate_image("a fox", engine="stable-diffusion-v1-6", allow_cached=True)
    request = route.calls.last.request
    assert request.headers["x-allow-cached"] == "true"
    assert json.loads(request.content)["text_prompts"] == [{"text": "a fox", "weight": 1}]


@pytest.mark.anyio
@respx.mock
async def test_key_from_the_environment_or_none_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    route = respx.post(TEXT).mock(return_value=httpx.Response(200, json=answer()))
    monkeypatch.setenv("STABILITY_API_KEY", "sk-from-env")
    async with StabilityAIClient(base_url=STABILITY) as client:
        await client.generate_image("a")
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-from-env"
    monkeypatch.delenv("STABILITY_API_KEY")
    async with StabilityAIClient(base_url=STABILITY) as client:
        await client.generate_image("a")
        assert KEY not in repr(client)
    assert "authorization" not in route.calls.last.request.headers


@pytest.mark.anyio
@respx.mock
async def test_gateway_headers_become_fields() -> None:
    headers = {"X-Cache": "HIT", "X-Cache-Key": "ab" * 32, "X-Credits-Charged": "0"}
    respx.post(TEXT).mock(return_value=httpx.Response(200, json=answer(), headers=headers))
    async with stability_client() as client:
        image = await client.generate_image("a", width=1024, height=1024)
    assert (image.cache, image.key, image.credits, image.from_cache) == (
        "HIT",
        "ab" * 32,
        0.0,
        True,
    )
    assert (image.width, image.height) == (1024, 1024)


@pytest.mark.anyio
@respx.mock
async def test_stale_answer_is_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    headers = {"X-Cache": "STALE", "X-Cache-Key": "cd" * 32, "X-Credits-Charged": "0.9"}
    respx.post(TEXT).mock(return_value=httpx.Response(200, json=answer(), headers=headers))
    async with stability_client() as client:
        with caplog.at_level(logging.WARNING, logger="gateway.client"):
            image = await client.generate_image("an old lighthouse", allow_cached=True)
    assert image.credits == 0.9
    (record,) = [r for r in caplog.records if r.name == "gateway.client"]
    assert record.levelno == logging.WARNING
    assert "STALE" in record.getMessage() and "an old lighthouse" in record.getMessage()


ERROR_CASES = [
    (400, {"id": "a" * 32, "name": "invalid_prompts", "message": "filtered words"},
     ContentPolicyViolationError),
    (403, {"id": "b" * 32, "name": "content_moderation", "errors": ["flagged"]},
     ContentPolicyViolationError),
    (429, {"id": "c" * 32, "name": "rate_limit_exceeded", "message": "slow down"}, RateLimitError),
    (500, {"id": "d" * 32, "name": "server_error", "message": "oops"}, ServerError),
    (504, {"id": "e" * 32, "name": "upstream_timeout", "message": "deadline"}, ServerError),
    (400, {"id": "f" * 32, "name": "invalid_sdxl_v1_dimensions", "message": "size"},
     RequestRejectedError),
    (401, {"id": "0" * 32, "name": "unauthorized", "message": "bad key"}, RequestRejectedError),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "payload", "kind"), ERROR_CASES)
@respx.mock
async def test_error_answers_map_to_errors_with_name_id_and_status(
    status: int, payload: dict[str, object], kind: type[ImageGenerationError]
) -> None:
    headers = {"Retry-After": "3"} if status == 429 else {}
    route = respx.post(TEXT).mock(
        return_value=httpx.Response(status, json=payload, headers=headers)
    )
    async with stability_client() as client:
        with pytest.raises(kind) as caught:
            await client.generate_image("a prompt")
    error = caught.value
    assert isinstance(error, ImageGenerationError)
    assert (error.status, error.name, error.id) == (status, payload["name"], payload["id"])
    detail = payload.get("message") or payload["errors"][0]  # type: ignore[index]
    assert str(detail) in str(error) and str(payload["id"]) in str(error)
    if isinstance(error, RateLimitError):
        assert error.retry_after == 3
    if isinstance(error, ContentPolicyViolationError):
        assert error.prompt == "a prompt"
    assert route.call_count == 1  # never retried by the client


@pytest.mark.anyio
@respx.mock
async def test_no_retries_of_its_own_against_stability() -> None:
    """Straight to Stability: a 500, a 429 and a dropped connection each cost one call and
    surface at once, even though the next answer would have succeeded."""
    ok = httpx.Response(200, json=answer())
    route = respx.post(TEXT).mock(
        side_effect=[httpx.Response(500, text="Internal error"), ok,
                     httpx.Response(429, json={"name": "rate_limit_exceeded"}), ok,
                     httpx.ConnectError("refused"), ok]
    )  # fmt: skip
    async with stability_client() as client:
        with pytest.raises(ServerError) as server:
            await client.generate_image("a")
        assert route.call_count == 1 and server.value.name is None
        assert "Internal error" in str(server.value)
        await client.generate_image("a")
        with pytest.raises(RateLimitError):
            await client.generate_image("a")
        assert route.call_count == 3
        await client.generate_image("a")
        with pytest.raises(NetworkError):
            await client.generate_image("a")
        assert route.call_count == 5


@pytest.mark.anyio
@respx.mock
async def test_content_filtered_image_is_a_policy_error(caplog: pytest.LogCaptureFixture) -> None:
    respx.post(TEXT).mock(
        return_value=httpx.Response(200, json=answer(finishReason="CONTENT_FILTERED"))
    )
    async with stability_client() as client:
        with (
            caplog.at_level(logging.WARNING, logger="gateway.client"),
            pytest.raises(ContentPolicyViolationError) as caught,
        ):
            await client.generate_image("something filtered")
    assert caught.value.name == "CONTENT_FILTERED"
    assert "something filtered" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(200, text="<html>"), APIError),
        (httpx.Response(200, json={"artifacts": []}), APIError),
        (
            httpx.Response(200, json={"artifacts": [{"base64": "!!notbase64"}]}),
            ImageValidationError,
        ),
        (httpx.Response(200, json=answer(finishReason="ERROR")), ServerError),
    ],
)
@respx.mock
async def test_unusable_answers_are_errors(
    response: httpx.Response, kind: type[ImageGenerationError]
) -> None:
    respx.post(TEXT).mock(return_value=response)
    async with stability_client() as client:
        with pytest.raises(kind):
            await client.generate_image("a")


@pytest.mark.anyio
async def test_ping_distinguishes_unreachable_from_any_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(404)

    transport = httpx.MockTransport(handler)
    async with StabilityAIClient(KEY, base_url="http://up.test", transport=transport) as up:
        await up.ping()
    async with StabilityAIClient(KEY, base_url="http://down.test", transport=transport) as down:
        with pytest.raises(NetworkError):
            await down.ping()


# --- Sizes ---------------------------------------------------------------------------------


def test_sdxl_sizes_are_the_gateways() -> None:
    from gateway.validation import SDXL_V1_SIZES as GATEWAY_SIZES

    assert set(SDXL_V1_SIZES) == set(GATEWAY_SIZES)


@pytest.mark.parametrize(
    ("wanted", "nearest"),
    [((1920, 1080), (1344, 768)), ((1080, 1920), (768, 1344)), ((1000, 1000), (1024, 1024)),
     ((2560, 1080), (1536, 640)), ((1600, 1200), (1152, 896)), ((1500, 1000), (1216, 832))],
)  # fmt: skip
def test_nearest_sdxl_size_by_aspect(wanted: tuple[int, int], nearest: tuple[int, int]) -> None:
    assert nearest_sdxl_size(*wanted) == nearest


def test_parse_size() -> None:
    assert parse_size("1920x1080") == (1920, 1080)
    for bad in ("1920", "x1080", "0x10", "axb", "1920x1080x3"):
        with pytest.raises(ValueError):
            parse_size(bad)


# --- Styles --------------------------------------------------------------------------------


def test_cinematic_is_the_seeds_defaults() -> None:
    style = StyleProfile.load("cinematic")
    assert style == StyleProfile()
    assert style.modifiers == (
        "cinematic lighting", "professional photography", "4k quality", "photorealistic",
    )  # fmt: skip
    assert style.negative == "blurry, low quality, watermark, text"
    assert (style.parameters.cfg_scale, style.parameters.steps) == (8, 40)
    assert style.parameters.seed == 0 and style.parameters.size is None


def test_style_from_a_toml_file_keeps_cinematic_defaults_for_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "noir.toml"
    path.write_text(
        'modifiers = ["film noir", "dramatic shadows"]\n'
        'negative_prompt = ["color", "blurry"]\n'
        '[params]\ncfg_scale = 9\nsize = "1536x640"\nseed = 7\n'
    )
    style = StyleProfile.load(path)
    assert style.name == "noir"
    assert style.modifiers == ("film noir", "dramatic shadows")
    assert style.negative == "color, blurry"
    assert style.parameters == StyleParams(cfg_scale=9, size=(1536, 640), seed=7)
    assert StyleProfile.load(str(path)) == style


def test_style_from_config_toml_which_the_gateway_still_loads(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[cache]\ndir = "x"\n'
        '[styles.watercolor]\nmodifiers = ["watercolor painting"]\n'
        '[styles.watercolor.params]\nsteps = 30\nstyle_preset = "analog-film"\n'
    )
    style = StyleProfile.load("watercolor", config=str(config))
    assert style.modifiers == ("watercolor painting",)
    assert style.parameters.steps == 30 and style.parameters.style_preset == "analog-film"
    assert load_settings(config, environ={}).cache.dir == "x"  # [styles] is not an error


@pytest.mark.parametrize(
    "text",
    ["colour = 1\n", '[params]\nsteps = "many"\n', '[params]\nsize = "big"\n',
     "[params]\nsampler = 1\n", 'modifiers = "one string"\n', "not toml ["],
)  # fmt: skip
def test_bad_style_files_are_style_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(StyleError):
        StyleProfile.load(path)


def test_unknown_style_names_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[styles.noir]\nmodifiers = []\n")
    with pytest.raises(StyleError, match="unknown style 'nope'; known styles: cinematic, noir"):
        StyleProfile.load("nope", config=str(config))
    with pytest.raises(StyleError, match="cannot read"):
        StyleProfile.load(tmp_path / "missing.toml")


# --- Translation and prompts (seeds' test 5) -----------------------------------------------


def test_glossary_longest_phrase_first_and_word_by_word() -> None:
    glossary = GlossaryTranslator(
        {"山": "mountain", "山景": "mountain landscape", "寧靜的": "serene", "一座": "a"}
    )
    assert glossary.translate("一座寧靜的山景") == "a serene mountain landscape"
    assert (
        glossary.translate(f"寧靜的山{FULLWIDTH_COMMA}一座山景。")
        == "serene mountain, a mountain landscape."
    )
    assert glossary.translate("A serene mountain") == "A serene mountain"  # English untouched


def test_untranslated_chinese_is_an_error_naming_the_phrase(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(TranslationError) as caught:
        GlossaryTranslator({"山": "mountain"}).translate(f"寧靜的山{FULLWIDTH_COMMA}夕陽")
    assert caught.value.phrase == "寧靜的"
    assert "寧靜的" in str(caught.value)
    keep = GlossaryTranslator({"山": "mountain"}, on_untranslated="keep")
    with caplog.at_level(logging.WARNING, logger="gateway.client"):
        assert keep.translate(f"寧靜的山{FULLWIDTH_COMMA}夕陽") == "寧靜的 mountain, 夕陽"
    assert "寧靜的" in caplog.text


def test_glossary_files_toml_and_json(tmp_path: Path) -> None:
    toml_path = tmp_path / "g.toml"
    toml_path.write_text('[glossary]\n"一座寧靜的山景" = "A serene mountain landscape"\n')
    json_path = tmp_path / "g.json"
    json_path.write_text(json.dumps({"一座寧靜的山景": "A serene mountain landscape"}))
    for path in (toml_path, json_path):
        assert GlossaryTranslator(path).translate("一座寧靜的山景") == "A serene mountain landscape"
    (tmp_path / "bad.json").write_text('["not", "pairs"]')
    with pytest.raises(TranslationError):
        GlossaryTranslator(tmp_path / "bad.json")


def service(**kwargs: object) -> ImageGenerationService:
    client = StabilityAIClient(KEY, base_url="http://unused.test")
    return ImageGenerationService(client, **kwargs)  # type: ignore[arg-type]


def test_enhance_prompt_seeds_examples() -> None:
    s = service()
    assert (
        s.enhance_prompt("A serene mountain", ["cinematic lighting", "4k quality"])
        == "A serene mountain, cinematic lighting, 4k quality"
    )
    assert (
        s.enhance_prompt(description="A serene mountain",
                         global_modifiers=["cinematic lighting", "4k quality"])
        == "A serene mountain, cinematic lighting, 4k quality"
    )  # fmt: skip
    assert s.enhance_prompt("A serene mountain", []) == "A serene mountain"
    assert s.enhance_prompt("  A  serene\tmountain, ", [" 4k  quality ", ""]) == (
        "A serene mountain, 4k quality"
    )
    assert s.enhance_prompt("A fox") == (
        "A fox, cinematic lighting, professional photography, 4k quality, photorealistic"
    )


def test_enhance_prompt_translates_chinese_first() -> None:
    modifiers = ["cinematic lighting", "professional photography", "4k quality",
                 "highly detailed", "photorealistic"]  # fmt: skip
    glossary = GlossaryTranslator({"一座寧靜的山景": "A serene mountain landscape"})
    s = service(translator=glossary)
    assert s.enhance_prompt("一座寧靜的山景", modifiers) == (
        "A serene mountain landscape, cinematic lighting, professional photography, "
        "4k quality, highly detailed, photorealistic"
    )
    assert service(translator=str.upper).enhance_prompt("a fox", []) == "A FOX"  # any callable
    with pytest.raises(TranslationError):  # no translator: Chinese is refused, not sent
        service().enhance_prompt("一座寧靜的山景", [])


# --- Validation (seeds' test 6) and resizing -----------------------------------------------


def encode(width: int, height: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(buffer, format=fmt)
    return buffer.getvalue()


def test_validate_image_seeds_cases() -> None:
    s = service()
    assert s.validate_image(encode(1920, 1080, "PNG")) is True
    assert s.validate_image(encode(1920, 1080, "JPEG")) is True
    with pytest.raises(ImageValidationError, match="Wrong resolution: 1280x720"):
        s.validate_image(encode(1280, 720, "PNG"))
    with pytest.raises(ImageValidationError, match="Wrong format: GIF"):
        s.validate_image(encode(1920, 1080, "GIF"))
    eleven_mb = encode(1920, 1080, "PNG") + b"\0" * (11 * 1024 * 1024)
    with pytest.raises(ImageValidationError, match="File too large"):
        s.validate_image(eleven_mb)
    with pytest.raises(ImageValidationError, match="Not an image"):
        s.validate_image(b"not an image at all")
    truncated = image_bytes(1920, 1080, noisy=True)[:200_000]
    with pytest.raises(ImageValidationError, match="does not decode"):
        s.validate_image(truncated)
    assert s.validate_image(encode(1344, 768, "PNG"), size=(1344, 768)) is True


def test_finish_image_scales_sdxl_output_to_the_frame() -> None:
    s = service()
    final = s.finish_image(encode(1344, 768, "PNG"))
    image = Image.open(io.BytesIO(final))
    assert (image.format, image.size) == ("PNG", (1920, 1080))
    assert image.convert("RGB").getpixel((960, 540)) == (0, 0, 255)
    exact = encode(1920, 1080, "PNG")
    assert s.finish_image(exact) == exact  # already right: untouched
    with pytest.raises(ImageValidationError):
        s.finish_image(b"garbage")


# --- Batches, scripts, assets --------------------------------------------------------------


def test_script_descriptions_keep_segment_positions() -> None:
    script = {"segments": [{"image_description": "a"}, {"narration": "no image"},
                           {"image_description": "  "}, {"image_description": "d"}]}  # fmt: skip
    assert script_descriptions(script) == [(1, "a"), (4, "d")]
    bad_scripts: list[Any] = [{}, {"segments": "x"}, {"segments": ["x"]}, []]
    for bad in bad_scripts:
        with pytest.raises(ValueError):
            script_descriptions(bad)


@pytest.mark.parametrize("bad", ["", "../up", "a/b", ".hidden", "-flag", "a b"])
def test_project_ids_must_be_plain_folder_names(bad: str) -> None:
    with pytest.raises(ValueError):
        check_project_id(bad)


def test_failure_error_carries_results() -> None:
    results = [
        ImageResult(1, "a", "a", "", data=b"x"),
        ImageResult(2, "b", "b", "", error=ServerError("500")),
    ]
    s = service(min_success_rate=0.8)
    with pytest.raises(ImageGenerationFailureError) as caught:
        s.check_success(results)
    assert caught.value.success_rate == 0.5
    assert [r.index for r in caught.value.failures] == [2]
    assert s.check_success(results, threshold=0.5) == 0.5


def test_asset_store_upserts_by_project_and_index(tmp_path: Path) -> None:
    store = AssetStore(f"sqlite:///{tmp_path / 'a.db'}")
    first = store.save("p1", [AssetRow(1, "completed", "f1", {"x": 1}),
                              AssetRow(2, "failed", None, {}, error="boom")])  # fmt: skip
    again = store.save("p1", [AssetRow(1, "completed", "f1", {"x": 2})])
    store.save("p2", [AssetRow(1, "completed", "g1", {})])
    rows = store.project("p1")
    assert [a.index for a in rows] == [1, 2] and rows[0].id == first[0].id == again[0].id
    assert rows[0].meta == {"x": 2} and rows[1].error == "boom"
    assert rows[0].created_at is not None
    store.close()
    reopened = AssetStore(tmp_path / "a.db")  # a plain path is SQLite
    assert len(reopened.project("p1")) == 2 and len(reopened.project("p2")) == 1
    reopened.close()


# --- The package ---------------------------------------------------------------------------


def test_every_public_name_resolves() -> None:
    for name in client_package.__all__:
        assert getattr(client_package, name) is not None
    with pytest.raises(AttributeError):
        client_package.nonexistent  # noqa: B018


def test_client_imports_nothing_of_the_server_and_the_cli_skips_sqlalchemy() -> None:
    """The client talks HTTP only: its modules never import starlette, uvicorn or the app.
    (gateway/__init__.py is replaced by a bare package so its own imports do not count.)
    And `stability-gateway serve` does not pay for SQLAlchemy to register `generate`."""
    probe = f"""
import sys, types
package = types.ModuleType("gateway"); package.__path__ = [{str(REPO / "gateway")!r}]
sys.modules["gateway"] = package
import gateway.client.command, gateway.client.service, gateway.client.assets
heavy = sorted(m for m in ("starlette", "uvicorn", "gateway.app") if m in sys.modules)
assert not heavy, heavy
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", probe], check=True, env=env, timeout=60)
    probe_cli = (
        "import sys, gateway.cli; gateway.cli.parser(); assert 'sqlalchemy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", probe_cli], check=True, env=env, timeout=60)


@pytest.mark.anyio
@respx.mock
async def test_credits_spent_then_saved_on_a_rerun(tmp_path: Path) -> None:
    """With X-Credits-Charged (a later gateway feature), a rerun's summary says what the
    cache saved: the cost recorded when each image was made, carried over by key."""
    from gateway.client.command import summary_line

    answers = iter(
        [httpx.Response(200, json=answer(), headers={"X-Cache": "MISS", "X-Cache-Key": f"k{i}",
                                                     "X-Credits-Charged": "0.9"})
         for i in (1, 2)]
        + [httpx.Response(200, json=answer(), headers={"X-Cache": "HIT", "X-Cache-Key": f"k{i}",
                                                       "X-Credits-Charged": "0"})
           for i in (1, 2)]
    )  # fmt: skip
    respx.post(TEXT).mock(side_effect=lambda request: next(answers))
    script = {"segments": [{"image_description": "one"}, {"image_description": "two"}]}
    client = StabilityAIClient(KEY, base_url=STABILITY)
    async with ImageGenerationService(client, root=tmp_path, max_concurrent=1) as s:
        first = await s.run_script("credits", script)
        rerun = await s.run_script("credits", script)
    assert (
        summary_line(first)
        == "2 images: 0 from cache, 2 generated, 0 failed; credits: 1.8 spent, 0 saved"
    )
    assert (
        summary_line(rerun)
        == "2 images: 2 from cache, 0 generated, 0 failed; credits: 0 spent, 1.8 saved"
    )
    assert [a.meta["cost"] for a in rerun.assets] == [0.9, 0.9]
    assert [a.meta["credits"] for a in rerun.assets] == [0.0, 0.0]
