"""v2beta Stable Image: POST /v2beta/stable-image/generate/{core,ultra,sd3}, and the upscale,
edit and control routes of the same shape (multipart in; image bytes or JSON out).

Each route is a row of `V2_ROUTES`: its path, its rule table, how its output size follows
from the request (for placeholders and checks), and whether Stability answers it with a job
id to poll. One class serves every row.

The gateway always asks upstream for JSON (`{"image", "finish_reason", "seed"}`), so one
entry serves both answers: `Accept: application/json` gets that JSON, anything else (the
API's default is `image/*`) gets the image bytes in the requested `output_format`, with
`finish-reason` and `seed` headers. Errors keep v2beta's shape (`{"id","name","errors"}`).

Sizes: every answer is checked before it is cached (a wrong size is a 502, never stored).
Stability documents the aspect ratio of a generate answer, not its pixels (Core, Ultra and
SD3 differ), so it is checked against the requested ratio, within 5 %, and the table sizes
are used for placeholders only. Edits answer the input's size exactly (outpaint: plus the
margins), fast upscale exactly 4x; conservative and creative upscale "to 4K resolution",
which fixes no pixel count, so their answer must keep the input's aspect (within 5 %) and be
no smaller than the input on either side.

Control routes follow their input: sketch, structure and style-transfer document no output
size, so their answer must keep the input image's aspect (within 5 %, like the 4K upscales,
and placeholders take the input's size); style draws the requested `aspect_ratio` whatever
the shape of its style image. Search-and-recolor is an edit: the input's size exactly.
Replace-background-and-relight is a job whose answer keeps the subject image's aspect.

Job routes (creative upscale, replace-background-and-relight): the first answer is the
upstream's `{"id"}`, passed through (the pipeline writes down the job, see gateway.jobs).
Once a poll of `GET /v2beta/results/{id}` has brought the image it is cached under the
request's key, and the same request later is answered `{"id": <cache key>}` straight away:
polling that id is served from the cache, so the caller's code keeps working and no new job
is started.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread
import httpx
import pybase64
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cache.keys import make_key
from cache.model import Artifact
from gateway.errors import UpstreamError
from gateway.generation import Generation, UpstreamRequest, Want
from gateway.http.image_answer import image_answer
from gateway.placeholder import placeholder_image
from gateway.rendered import remember, rendered
from gateway.routes import answers
from gateway.routes.common import read_multipart, wants_json_v2
from gateway.validation import (
    MAX_V2_SEED,
    PIL_FORMATS,
    V2_ASPECT_SIZES,
    V2_CONTROL_SKETCH,
    V2_CONTROL_STRUCTURE,
    V2_CONTROL_STYLE,
    V2_CONTROL_STYLE_TRANSFER,
    V2_CORE,
    V2_EDIT_ERASE,
    V2_EDIT_INPAINT,
    V2_EDIT_OUTPAINT,
    V2_EDIT_REMOVE_BACKGROUND,
    V2_EDIT_REPLACE_BACKGROUND_AND_RELIGHT,
    V2_EDIT_SEARCH_AND_RECOLOR,
    V2_EDIT_SEARCH_AND_REPLACE,
    V2_SD3,
    V2_ULTRA,
    V2_UPSCALE_CONSERVATIVE,
    V2_UPSCALE_CREATIVE,
    V2_UPSCALE_FAST,
    FormTable,
    check_form,
)

V2_JSON = "v2-json"  # the memoised form of the JSON answer (gateway.rendered)
MEDIA_TYPES: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
ASPECT_TOLERANCE = 0.05
MAX_PLACEHOLDER_SIDE = 4096
# Conservative and creative upscale: "takes images between 64x64 and 1 megapixel and
# upscales them to 4K resolution ... by 20 to 40 times" (Stability's upscale documentation,
# as quoted on AWS Bedrock's "Stability AI Image Services" page, Upscale section; the
# v2alpha upscale reference says the same). No exact size: placeholders use this long side.
UPSCALE_4K_SIDE = 4096

Output = Literal[
    "aspect", "ratio", "same", "outpaint", "upscale", "upscale_4k", "input_aspect"
]  # fmt: skip


@dataclass(frozen=True)
class V2Route:
    """One v2beta route as data. `output` says what the answer's size follows: the aspect
    ratio (or the input image when one is given), the aspect ratio always (control/style:
    its image is a style reference), the input image, the input image plus the outpaint
    margins, the input scaled by exactly `factor`, the input brought to 4K with its aspect
    kept, or the input's aspect alone (see the module docstring for what each checks).
    `source` names the upload that is "the input" (`init_image` for style transfer)."""

    path: str
    table: FormTable
    output: Output
    factor: int = 1
    job: bool = False  # Stability answers with an id to poll at /v2beta/results/{id}
    source: str = "image"


V2_ROUTES: tuple[V2Route, ...] = (
    V2Route("/v2beta/stable-image/generate/core", V2_CORE, "aspect"),
    V2Route("/v2beta/stable-image/generate/ultra", V2_ULTRA, "aspect"),
    V2Route("/v2beta/stable-image/generate/sd3", V2_SD3, "aspect"),
    V2Route("/v2beta/stable-image/upscale/fast", V2_UPSCALE_FAST, "upscale", factor=4),
    V2Route("/v2beta/stable-image/upscale/conservative", V2_UPSCALE_CONSERVATIVE, "upscale_4k"),
    V2Route("/v2beta/stable-image/upscale/creative", V2_UPSCALE_CREATIVE, "upscale_4k", job=True),
    V2Route("/v2beta/stable-image/edit/erase", V2_EDIT_ERASE, "same"),
    V2Route("/v2beta/stable-image/edit/inpaint", V2_EDIT_INPAINT, "same"),
    V2Route("/v2beta/stable-image/edit/outpaint", V2_EDIT_OUTPAINT, "outpaint"),
    V2Route("/v2beta/stable-image/edit/search-and-replace", V2_EDIT_SEARCH_AND_REPLACE, "same"),
    V2Route("/v2beta/stable-image/edit/remove-background", V2_EDIT_REMOVE_BACKGROUND, "same"),
    V2Route("/v2beta/stable-image/edit/search-and-recolor", V2_EDIT_SEARCH_AND_RECOLOR, "same"),
    V2Route(
        "/v2beta/stable-image/edit/replace-background-and-relight",
        V2_EDIT_REPLACE_BACKGROUND_AND_RELIGHT,
        "input_aspect",
        job=True,
        source="subject_image",
    ),
    V2Route("/v2beta/stable-image/control/sketch", V2_CONTROL_SKETCH, "input_aspect"),
    V2Route("/v2beta/stable-image/control/structure", V2_CONTROL_STRUCTURE, "input_aspect"),
    V2Route("/v2beta/stable-image/control/style", V2_CONTROL_STYLE, "ratio"),
    V2Route(
        "/v2beta/stable-image/control/style-transfer",
        V2_CONTROL_STYLE_TRANSFER,
        "input_aspect",
        source="init_image",
    ),
)


def output_size(
    route: V2Route, params: dict[str, Any], sizes: dict[str, tuple[int, int]]
) -> tuple[tuple[int, int], str | None]:
    """(width, height) of a placeholder answer, and the aspect ratio an answer must have
    (None when it follows an input image instead)."""
    image = sizes.get(route.source)
    if route.output == "ratio" or (route.output == "aspect" and image is None):
        ratio = str(params.get("aspect_ratio", "1:1"))
        return V2_ASPECT_SIZES[ratio], ratio
    assert image is not None  # every other route requires its input upload
    width, height = expected_size(route, params, image) or image
    scale = 1.0
    if route.output == "upscale_4k":
        scale = UPSCALE_4K_SIDE / max(width, height)
    elif route.output in ("upscale", "input_aspect"):  # a placeholder need not be larger
        scale = min(1.0, MAX_PLACEHOLDER_SIDE / max(width, height))
    if scale != 1.0:
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return (width, height), None


def expected_size(
    route: V2Route, params: dict[str, Any], image: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The exact (width, height) Stability documents for this route's answer, or None when
    it documents none (generate routes and control/style: the aspect ratio; 4K upscales:
    see check_upscaled; the other control routes: check_same_aspect)."""
    if image is None or route.output in ("aspect", "ratio", "upscale_4k", "input_aspect"):
        return None
    width, height = image
    if route.output == "outpaint":
        width += int(params.get("left", 0)) + int(params.get("right", 0))
        height += int(params.get("up", 0)) + int(params.get("down", 0))
    elif route.output == "upscale":
        width, height = width * route.factor, height * route.factor
    return width, height


def _size_of(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # not an image at all: check_image reports it
        return None


def check_aspect(data: bytes, ratio: str) -> None:
    """Refuse an answer whose shape is not the requested aspect ratio (within 5 %)."""
    size = _size_of(data)
    if size is None:
        return
    width, height = size
    across, down = (int(n) for n in ratio.split(":"))
    if abs((width / height) / (across / down) - 1) > ASPECT_TOLERANCE:
        raise UpstreamError(f"upstream sent a {width}x{height} image, expected aspect {ratio}")


def check_same_aspect(data: bytes, source: tuple[int, int]) -> None:
    """Refuse an answer that does not keep its input image's aspect (within 5 %): the
    control routes and relight document no output size, only that they redraw the input."""
    size = _size_of(data)
    if size is None:
        return
    (width, height), (source_width, source_height) = size, source
    if abs((width / height) / (source_width / source_height) - 1) > ASPECT_TOLERANCE:
        raise UpstreamError(
            f"upstream sent a {width}x{height} image for a {source_width}x{source_height} "
            "input (expected the input's aspect)"
        )


def check_upscaled(data: bytes, source: tuple[int, int]) -> None:
    """Refuse a 4K upscale's answer that is smaller than its input on either side, or not
    of the input's aspect ratio (within 5 %): Stability documents no exact size for it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # not an image at all: check_image reports it
        return
    source_width, source_height = source
    smaller = width < source_width or height < source_height
    ratio = (width / height) / (source_width / source_height)
    if smaller or abs(ratio - 1) > ASPECT_TOLERANCE:
        raise UpstreamError(
            f"upstream sent a {width}x{height} image as the upscale of a "
            f"{source_width}x{source_height} one (expected its aspect, and no smaller)"
        )


def decode_v2(response: httpx.Response, generation: Generation) -> list[Artifact]:
    """Stability's v2beta JSON answer -> one artifact in the requested format."""
    image = answers.v2_image(response.content)
    data = image.data
    try:
        seed = int(image.fields.get("seed") or 0)
        finish_reason = str(image.fields.get("finish_reason") or "SUCCESS")
    except (TypeError, ValueError) as exc:
        raise UpstreamError(f"upstream sent an unexpected JSON shape ({exc!r})") from exc
    ratio = generation.summary.get("aspect_ratio")
    if ratio:
        check_aspect(data, ratio)
    source = generation.summary.get("upscaled_from")
    if source:
        check_upscaled(data, (int(source[0]), int(source[1])))
    shaped_like = generation.summary.get("aspect_of")
    if shaped_like:
        check_same_aspect(data, (int(shaped_like[0]), int(shaped_like[1])))
    media_type = MEDIA_TYPES[generation.expected_formats[0]]
    artifact = Artifact(data, seed, finish_reason, media_type)
    # Stability's own answer is the JSON answer: no base64 encoded, none copied.
    remember(artifact, V2_JSON, response.content)
    return [artifact]


class V2JsonAnswer:
    """The decoding half of a v2beta route, for answers that arrive later (job results)."""

    def decode(self, response: httpx.Response, generation: Generation) -> list[Artifact]:
        return decode_v2(response, generation)


V2_JSON_ANSWER = V2JsonAnswer()


def _v2_json(artifact: Artifact, b64: bytes | None = None) -> bytes:
    return b"".join(
        (
            b'{"image":"',
            pybase64.b64encode(artifact.data) if b64 is None else b64,
            b'","finish_reason":',
            json.dumps(artifact.finish_reason).encode(),
            b',"seed":',
            str(artifact.seed).encode(),
            b"}",
        )
    )


def render_v2(artifact: Artifact, want: Want, headers: dict[str, str]) -> Response:
    """Image bytes with finish-reason/seed headers, or v2beta's JSON, from one artifact."""
    if want == "json":
        body = rendered(artifact, V2_JSON, _v2_json)
        return Response(body, media_type="application/json", headers=headers)
    return image_answer(artifact, headers)


class StableImage:
    """One v2beta Stable Image route (a row of V2_ROUTES)."""

    v2 = True

    def __init__(self, route: V2Route) -> None:
        self.row = route
        self.route = route.path.lstrip("/")
        self.name = route.path.rsplit("/", 1)[1]

    async def parse(self, request: Request) -> Generation:
        form = await read_multipart(request)
        table = self.row.table
        checked = await anyio.to_thread.run_sync(check_form, form.fields, form.file_bytes(), table)
        params = checked.params
        output_format = str(params.get("output_format", "png"))
        (width, height), ratio = output_size(self.row, params, checked.image_sizes)
        source = checked.image_sizes.get(self.row.source)
        want: Want = "json" if wants_json_v2(request) else "image"
        if self.row.job:
            want = "job"  # the answer is an id to poll; the poll picks the format
        prompt = params.get("prompt") or params.get("background_prompt")  # relight has none
        prompts = [{"text": prompt, "weight": 1}] if prompt else []
        if params.get("negative_prompt"):
            prompts.append({"text": params["negative_prompt"], "weight": -1})
        return Generation(
            route=self.route,
            engine=self.name,
            key=make_key(self.route, self.name, params, checked.uploads),
            upstream=UpstreamRequest(
                "POST",
                self.row.path,
                data=dict(form.fields),
                files={name: upload.as_httpx() for name, upload in form.files.items()},
                route=self.route,
            ),
            want=want,
            # Generate routes: the ratio is checked in decode; 4K upscales: check_upscaled.
            expected_size=expected_size(self.row, params, source),
            expected_formats=(PIL_FORMATS[output_format],),
            random_seed="seed" in table.fields and not params.get("seed"),
            summary={
                "route": self.route,
                "engine": str(params.get("model", self.name)),
                "prompts": prompts,
                "width": width,
                "height": height,
                "aspect_ratio": ratio,
                "upscaled_from": list(source)
                if source and self.row.output == "upscale_4k"
                else None,
                "aspect_of": list(source) if source and self.row.output == "input_aspect" else None,
                "output_format": output_format,
                "seed": params.get("seed", 0),
                "job": self.row.job,
                "params": params,
                "uploads": {
                    name: {"bytes": len(checked.uploads[name]), "width": w, "height": h}
                    for name, (w, h) in checked.image_sizes.items()
                },
            },
            v2=True,
        )

    def decode(self, response: httpx.Response, generation: Generation) -> list[Artifact]:
        return decode_v2(response, generation)

    def render(
        self, artifacts: Sequence[Artifact], generation: Generation, headers: dict[str, str]
    ) -> Response:
        if generation.want == "job":
            return JSONResponse({"id": generation.key}, headers=headers)
        return render_v2(artifacts[0], generation.want, headers)

    def placeholder(self, generation: Generation) -> list[Artifact]:
        summary = generation.summary
        width, height = int(summary["width"]), int(summary["height"])
        image_format = generation.expected_formats[0]
        lines = [self.route, *(f"{p['text']} ({p['weight']:g})" for p in summary["prompts"])]
        data = placeholder_image(
            width, height, key=generation.key, lines=lines, image_format=image_format
        )
        seed = int(summary["seed"] or int(generation.key[:8], 16) % MAX_V2_SEED)
        return [Artifact(data, seed, media_type=MEDIA_TYPES[image_format])]
