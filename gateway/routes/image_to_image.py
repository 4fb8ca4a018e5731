"""POST /v1/generation/{engine_id}/image-to-image, .../image-to-image/masking and
.../image-to-image/upscale: Stability's v1 multipart routes.

The three differ only in their rule table (gateway.validation.V1_TABLES) and in the size
of what they draw, so one class serves them all. The request goes upstream as the caller
sent it (every form field, every file byte for byte); the key covers every form field,
numbers parsed, plus the SHA-256 of each uploaded file, so neither field order nor the
multipart boundary changes it. The answer format is v1's, as on text-to-image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response

from cache.keys import make_key
from cache.model import Artifact
from gateway.errors import BadRequest
from gateway.generation import Generation, UpstreamRequest, Want
from gateway.placeholder import placeholder_image
from gateway.routes.common import engine_id, read_multipart, wants_image
from gateway.routes.text_to_image import TextToImage, sample_line
from gateway.validation import CheckedForm, check_form, check_upscale_target, v1_table

Kind = Literal["image-to-image", "masking", "upscale"]
SUFFIXES: dict[str, str] = {
    "image-to-image": "image-to-image",
    "masking": "image-to-image/masking",
    "upscale": "image-to-image/upscale",
}
# The v1 answer (JSON artifacts, or PNG bytes with Finish-Reason and Seed) is the same on
# every v1 generation route; text-to-image owns its decoding and rendering.
_V1_ANSWER = TextToImage(defaults={})


def prompts_of(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The text_prompts[i][text|weight] key fields back as a list, for logs and inspection."""
    prompts = []
    for i in range(len(params)):
        text = params.get(f"text_prompts[{i}][text]")
        if text is None:
            break
        prompts.append({"text": text, "weight": params[f"text_prompts[{i}][weight]"]})
    return prompts


class ImageToImage:
    """One of the three v1 multipart routes, chosen by `kind`."""

    v2 = False

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.suffix = SUFFIXES[kind]
        self.route = f"v1/{self.suffix}"

    async def parse(self, request: Request) -> Generation:
        engine = engine_id(request)
        form = await read_multipart(request)
        table = v1_table(self.kind, engine)
        checked = await anyio.to_thread.run_sync(check_form, form.fields, form.file_bytes(), table)
        params = checked.params
        width, height = self._output_size(checked)
        want: Want = "image" if wants_image(request, image_types=("image/png",)) else "json"
        samples = int(params.get("samples", 1))
        if want == "image" and samples != 1:
            raise BadRequest(
                "samples must be 1 when Accept is image/png (one image per response)",
                name="invalid_samples",
            )
        return Generation(
            route=self.route,
            engine=engine,
            key=make_key(self.route, engine, params, checked.uploads),
            upstream=UpstreamRequest(
                "POST",
                f"/v1/generation/{engine}/{self.suffix}",
                data=dict(form.fields),
                files={name: upload.as_httpx() for name, upload in form.files.items()},
                route=self.route,
            ),
            want=want,
            # An upscaler's exact rounding of the kept aspect is its own: not checked.
            expected_size=None if self.kind == "upscale" else (width, height),
            random_seed="seed" in table.fields and not params.get("seed"),
            samples=samples,
            summary={
                "route": self.route,
                "engine": engine,
                "prompts": prompts_of(params),
                "width": width,
                "height": height,
                "seed": params.get("seed", 0),
                "params": {k: v for k, v in params.items() if not k.startswith("text_prompts")},
                "uploads": {
                    name: {"bytes": len(checked.uploads[name]), "width": w, "height": h}
                    for name, (w, h) in checked.image_sizes.items()
                },
            },
        )

    def _output_size(self, checked: CheckedForm) -> tuple[int, int]:
        if self.kind != "upscale":
            return checked.image_sizes["init_image"]
        return check_upscale_target(
            checked.image_sizes["image"],
            checked.params.get("width"),
            checked.params.get("height"),
        )

    def decode(self, response: httpx.Response, generation: Generation) -> list[Artifact]:
        return _V1_ANSWER.decode(response, generation)

    def render(
        self, artifacts: Sequence[Artifact], generation: Generation, headers: dict[str, str]
    ) -> Response:
        return _V1_ANSWER.render(artifacts, generation, headers)

    def placeholder(self, generation: Generation) -> list[Artifact]:
        summary = generation.summary
        width, height = int(summary["width"]), int(summary["height"])
        samples = int(summary["params"].get("samples", 1))
        seed = int(summary["seed"] or int(generation.key[:8], 16))
        prompts = [f"{p['text']} ({p['weight']:g})" for p in summary["prompts"]]
        return [
            Artifact(
                placeholder_image(
                    width,
                    height,
                    key=f"{generation.key}:{i}",
                    lines=[
                        self.route,
                        sample_line(generation.engine, seed + i, i, samples),
                        *prompts,
                    ],
                ),
                seed=seed + i,
            )
            for i in range(samples)
        ]
