"""POST /v1/generation/{engine_id}/text-to-image."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pybase64
from starlette.requests import Request
from starlette.responses import Response

from cache.keys import make_key, normalise
from cache.model import Artifact
from gateway.errors import BadRequest, UpstreamError
from gateway.generation import Generation, UpstreamRequest, Want
from gateway.http.image_answer import image_answer
from gateway.placeholder import placeholder_image
from gateway.rendered import remember, rendered
from gateway.routes import answers
from gateway.routes.common import engine_id, read_json_object, wants_image
from gateway.validation import (
    SDXL_V1_ENGINES,
    TEXT_TO_IMAGE_FIELDS,
    TEXT_TO_IMAGE_RULES,
    check_engine_dimensions,
    check_extras,
    check_fields,
    check_known_fields,
    check_text_prompts,
)

ROUTE = "v1/text-to-image"
V1_JSON = "v1-json"  # the memoised form of a one-image JSON answer (gateway.rendered)


def fill_defaults(
    body: Mapping[str, Any], engine: str, defaults: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The request as it will be sent upstream: configured defaults filled in, prompt
    weights made explicit, numbers normalised. The key is computed from this same dict.
    `body["text_prompts"]` must already have passed `check_text_prompts`."""
    filled = dict(defaults.get("text_to_image", {}))
    if engine in SDXL_V1_ENGINES:
        filled.update(defaults.get("text_to_image_sdxl", {}))
    filled.update({k: v for k, v in body.items() if v is not None})
    filled["text_prompts"] = [{**p, "weight": p.get("weight", 1)} for p in body["text_prompts"]]
    normalised: dict[str, Any] = normalise(filled)
    return normalised


class TextToImage:
    v2 = False
    # The only header `parse` reads (gateway.parse_memo); a test checks that this holds.
    memo_headers = ("accept",)

    def __init__(self, defaults: Mapping[str, Mapping[str, Any]]) -> None:
        self.defaults = defaults

    async def parse(self, request: Request) -> Generation:
        engine = engine_id(request)
        body = await read_json_object(request)
        check_known_fields(body, TEXT_TO_IMAGE_FIELDS)
        check_text_prompts(body.get("text_prompts"))
        check_extras(body.get("extras"))
        params = fill_defaults(body, engine, self.defaults)
        # The engine's own size list first: for SDXL 1.0 the real API names the allowed
        # sizes (invalid_sdxl_v1_dimensions) rather than the multiple-of-64 rule.
        check_engine_dimensions(engine, params.get("width"), params.get("height"))
        check_fields(params, TEXT_TO_IMAGE_RULES)
        width, height = int(params["width"]), int(params["height"])
        want: Want = "image" if wants_image(request, image_types=("image/png",)) else "json"
        if want == "image" and params["samples"] != 1:
            raise BadRequest(
                "samples must be 1 when Accept is image/png (one image per response)",
                name="invalid_samples",
            )
        key = make_key(ROUTE, engine, params)
        prompts = params["text_prompts"]
        return Generation(
            route=ROUTE,
            engine=engine,
            key=key,
            upstream=UpstreamRequest(
                "POST", f"/v1/generation/{engine}/text-to-image", json=params, route=ROUTE
            ),
            want=want,
            expected_size=(width, height),
            random_seed=not params.get("seed"),
            samples=int(params["samples"]),
            summary={
                "route": ROUTE,
                "engine": engine,
                "prompts": [{"text": p["text"], "weight": p["weight"]} for p in prompts],
                "width": width,
                "height": height,
                "seed": params.get("seed", 0),
                "params": {k: v for k, v in params.items() if k != "text_prompts"},
            },
        )

    def decode(self, response: httpx.Response, generation: Generation) -> list[Artifact]:
        images = answers.v1_images(response.content)
        try:
            artifacts = [
                Artifact(
                    data=image.data,
                    seed=int(image.fields.get("seed") or 0),
                    finish_reason=str(image.fields.get("finishReason") or "SUCCESS"),
                )
                for image in images
            ]
        except (TypeError, ValueError) as exc:
            raise UpstreamError(f"upstream sent an unexpected JSON shape ({exc!r})") from exc
        if len(artifacts) == 1:
            # Stability's own answer is the JSON answer: no base64 encoded, none copied.
            remember(artifacts[0], V1_JSON, response.content)
        return artifacts

    def render(
        self, artifacts: Sequence[Artifact], generation: Generation, headers: dict[str, str]
    ) -> Response:
        if generation.want == "image":
            return image_answer(artifacts[0], headers)
        body = json_artifacts(artifacts)
        return Response(body, media_type="application/json", headers=headers)

    def placeholder(self, generation: Generation) -> list[Artifact]:
        width, height = generation.expected_size or (1024, 1024)
        samples = int(generation.upstream.json.get("samples", 1))
        seed = int(generation.upstream.json.get("seed") or int(generation.key[:8], 16))
        prompts = [f"{p['text']} ({p['weight']:g})" for p in generation.summary["prompts"]]
        return [
            Artifact(
                placeholder_image(
                    width,
                    height,
                    key=f"{generation.key}:{i}",
                    lines=[sample_line(generation.engine, seed + i, i, samples), *prompts],
                ),
                seed=seed + i,
            )
            for i in range(samples)
        ]


def sample_line(engine: str, seed: int, index: int, samples: int) -> str:
    """What a v1 placeholder says about itself, so that offline images can be told apart."""
    return f"{engine}, seed {seed}, sample {index + 1} of {samples}"


def _artifact_json(artifact: Artifact, b64: bytes | None = None) -> bytes:
    return b"".join(
        (
            b'{"base64":"',
            pybase64.b64encode(artifact.data) if b64 is None else b64,
            b'","seed":',
            str(artifact.seed).encode(),
            b',"finishReason":',
            json.dumps(artifact.finish_reason).encode(),
            b"}",
        )
    )


def _single_answer(artifact: Artifact, b64: bytes | None = None) -> bytes:
    return b"".join((b'{"artifacts":[', _artifact_json(artifact, b64), b"]}"))


def json_artifacts(artifacts: Sequence[Artifact]) -> bytes:
    """Stability's v1 JSON answer. A one-image answer (the usual case) is built once per
    artifact and reused: base64-encoding a 2.6 MB image costs milliseconds per request."""
    if len(artifacts) == 1:
        return rendered(artifacts[0], V1_JSON, _single_answer)
    return b"".join((b'{"artifacts":[', b",".join(map(_artifact_json, artifacts)), b"]}"))
