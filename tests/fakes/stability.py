"""A fake Stability AI REST API, served over real HTTP, for end-to-end tests of the gateway.

The gateway talks to upstream through httpx, so faults must happen on a real socket (timeouts,
dropped connections, bad bodies) to exercise the same code paths as production. The fake runs
uvicorn in a background thread on 127.0.0.1 and a free port, records every request, and answers
each generation request according to a per-test script of behaviours:

    with FakeStability() as fake:
        fake.script(error(429, "rate_limit_exceeded", headers={"Retry-After": "2"}), ok())
        ...  # point the gateway at fake.url
        assert len(fake.generation_calls()) == 2

Concurrent tests, where arrival order says nothing, script by prompt instead:
`fake.for_prompt("image 7", error(500))` answers every request whose prompt contains the
text, retries included.

Asynchronous routes (creative upscale, say) are scripted with `accepted()`: the POST answers
`{"id"}` and `GET /v2beta/results/{id}` answers 202 in-progress `polls` times, then the image.

Any other path answers what `fake.on(path, reply(...), ...)` scripted for it (one reply
per request, the last one repeated), or, for a few routes the gateway only forwards, a
built-in answer: `/v2beta/3d/stable-fast-3d` a small binary glTF model, and
`/v2beta/audio/stable-audio-2/text-to-audio` audio bytes; anything else is a 404.

Output sizes follow Stability's documentation: v1 and v2beta generate routes the requested
size or aspect ratio; v2beta edits the input image's size (outpaint adds the margins); fast
upscale 4x; conservative and creative upscale "to 4K resolution" (see `UPSCALE_4K_SIDE`);
control/style the requested aspect ratio; the other control routes and
replace-background-and-relight their input image's size (Stability documents none: the
gateway checks their aspect only). replace-background-and-relight always answers a job, as
on the real API.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import functools
import hashlib
import json
import logging
import random
import secrets
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, Self

from PIL import UnidentifiedImageError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes.images import image_bytes, image_size, with_text_chunk
from tests.support.threaded_server import ThreadedServer

# Output size of the v2beta endpoints, which take an aspect ratio instead of a width and height.
V2_ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "2:3": (832, 1248),
    "3:2": (1216, 832),
    "4:5": (896, 1120),
    "5:4": (1120, 896),
}

V2_FORMATS = ("png", "jpeg", "webp")
# Conservative and creative upscale take an image of 64x64 to 1 megapixel "and upscale it to
# 4K resolution" (Stability's upscale documentation, as quoted by AWS Bedrock's "Stability
# AI Image Services" page); the fake draws the input's aspect with this long side.
UPSCALE_4K_SIDE = 4096
INVALID_BASE64 = "!!!notbase64@@"
NOT_AN_IMAGE = b"this is not a png"


def key_hash(authorization: str) -> str:
    """The short hash of an Authorization header that account routes echo back as `who`.

    Echoing a hash rather than the key lets tests check which key reached upstream (and that
    keys are never mixed between callers) without the fake ever reflecting a secret.
    """
    return hashlib.sha256(authorization.encode()).hexdigest()[:8]


# --- Behaviours: what the fake does with the next generation request -------------------------


# Each behaviour is one frozen dataclass, and its lower-case name is the same class, so a
# script reads `fake.script(error(429, headers=...), ok())` with nothing defined twice.


@dataclass(frozen=True, kw_only=True)
class Ok:
    """Answer normally (after `delay` seconds), e.g. finish_reason="CONTENT_FILTERED";
    width/height force the produced image's size (to fake a wrong size).

    `reuse_pixels` (PNG only): every answer has the same pixels, encoded once, and bytes of
    its own (a tEXt chunk naming the request). The bench's miss section uses it so that
    what it measures is the proxy, not this fake's 0.2 s of PNG encoding per noisy image."""

    delay: float = 0.0
    finish_reason: str = "SUCCESS"
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    noisy: bool = False
    reuse_pixels: bool = False


@dataclass(frozen=True)
class ApiError:
    """Answer with an error, e.g. error(429, "rate_limit_exceeded", headers={"Retry-After": "2"}).

    v1 body: {"id", "name", "message"}; v2 body: {"id", "name", "errors": [message]}. By default
    (v2=None) the shape follows the route; pass v2=True/False to force one.
    """

    status: int
    name: str = "server_error"
    message: str = "An unexpected server error occurred, please try again."
    headers: Mapping[str, str] | None = field(default=None, kw_only=True)
    delay: float = field(default=0.0, kw_only=True)
    v2: bool | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Malformed:
    """A 200 that the gateway must not trust: broken transport, JSON, base64 or image."""

    kind: Literal[
        "reset_mid_body", "truncated_json", "invalid_base64", "not_an_image", "corrupt_pixels"
    ]
    delay: float = 0.0


@dataclass(frozen=True)
class RawBody:
    """Answer with exactly this status, body and content type."""

    status: int
    body: bytes
    content_type: str = "application/octet-stream"
    delay: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """Answer with a job id, as Stability's asynchronous routes do (200 on the real API; the
    status is scriptable). GET /v2beta/results/{id} then answers 202 `{"id", "status":
    "in-progress"}` `polls` times, then 200 with the image in the format the poll Accepts
    (of width x height when given, to fake a wrong size)."""

    status: int = 200
    polls: int = 1  # 202 in-progress answers before the result is ready
    delay: float = 0.0
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What a path scripted with `fake.on` answers: this status, headers and body, the body
    sent in `chunk`-byte pieces. With `hold`, the last piece waits until that event is set,
    so a test can see the first bytes arrive before the body is all produced; if it is not
    set within `hold_seconds` (a client that waits for the whole body), the connection is
    broken off instead."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] | None = None
    chunk: int = 1 << 20
    hold: threading.Event | None = None
    hold_seconds: float = 30.0


Behaviour = Ok | ApiError | Malformed | RawBody | Accepted
ok = Ok
error = ApiError
accepted = Accepted
status_body = RawBody
reply = Reply


def hang(seconds: float) -> Ok:
    """Wait `seconds` before answering normally, so a gateway with a shorter timeout gives up."""
    return Ok(delay=seconds)


def reset_mid_body(*, delay: float = 0.0) -> Malformed:
    """Send the headers and half the body of a normal answer, then drop the connection."""
    return Malformed("reset_mid_body", delay)


def truncated_json(*, delay: float = 0.0) -> Malformed:
    """200 application/json whose body is a valid answer cut in half (whatever was Accepted)."""
    return Malformed("truncated_json", delay)


def invalid_base64(*, delay: float = 0.0) -> Malformed:
    """200 JSON answer whose image base64 is not base64 at all."""
    return Malformed("invalid_base64", delay)


def not_an_image(*, delay: float = 0.0) -> Malformed:
    """200 answer whose image is b"this is not a png" (base64 in JSON, raw bytes otherwise)."""
    return Malformed("not_an_image", delay)


def corrupt_pixels(*, delay: float = 0.0) -> Malformed:
    """200 answer whose PNG has valid chunk CRCs (so `verify()` passes) but pixel data that
    is not a zlib stream: it cannot be decoded. Non-PNG formats are sent unharmed."""
    return Malformed("corrupt_pixels", delay)


def undecodable_png(data: bytes) -> bytes:
    """`data` (a PNG) with every IDAT chunk's content replaced by garbage of the same length
    and the chunk CRCs recomputed: structurally valid, undecodable (0xff... is an invalid
    deflate block type)."""
    signature, out, at = data[:8], [data[:8]], 8
    assert signature == b"\x89PNG\r\n\x1a\n", "not a PNG"
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IDAT":
            body = (b"\x78\x9c" + b"\xff" * length)[:length]
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        out.append(length.to_bytes(4, "big") + kind + body + crc)
        at += 12 + length
    return b"".join(out)


def wrong_size(*, delay: float = 0.0) -> Ok:
    """A normal answer except that the image is 64x64 whatever size was asked."""
    return Ok(delay=delay, width=64, height=64)


# --- Recording ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request as the fake received it."""

    t: float  # time.time() when the request arrived, before its body was read
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    query: str

    def json(self) -> Any:
        """The body parsed as JSON (v1 text-to-image requests)."""
        return json.loads(self.body)


def count_max_in_window(times: Sequence[float], window: float) -> int:
    """Most arrivals in any half-open window [t, t + window).

    A busiest window can always be slid right until it starts at an arrival, so checking
    windows that start at each arrival is enough.
    """
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, start + window) - i for i, start in enumerate(ordered)),
        default=0,
    )


# --- Generation requests -----------------------------------------------------------------------


class _BadRequest(Exception):
    """The request cannot be answered the way Stability would; becomes a 400."""


class _IntentionalReset(Exception):
    """Raised mid-response so uvicorn closes the connection (the reset_mid_body behaviour)."""


@dataclass(frozen=True)
class _GenRequest:
    """What a generation request asks for, whatever route and encoding it came in."""

    v2: bool
    raw: bool  # the caller Accepts image bytes rather than JSON
    width: int
    height: int
    samples: int = 1
    seed: int = 0  # 0 means "server picks"
    fmt: str = "png"


@dataclass(frozen=True)
class _Artifact:
    data: bytes
    seed: int
    finish_reason: str


def _int_field(value: object, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(str(value))
    except ValueError as exc:
        raise _BadRequest(f"not an integer: {value!r}") from exc


async def _read_form(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    """Multipart fields and file contents, with the upload temp files closed on return."""
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = await value.read()
            else:
                fields[name] = value
    return fields, files


def _upload_size(files: dict[str, bytes], name: str) -> tuple[int, int]:
    if name not in files:
        raise _BadRequest(f"{name}: required file is missing")
    try:
        return image_size(files[name])
    except (UnidentifiedImageError, OSError) as exc:
        raise _BadRequest(f"{name}: not a decodable image") from exc


def _v1_raw(request: Request) -> bool:
    return "image/png" in request.headers.get("accept", "")


async def _parse_v1_text(request: Request) -> _GenRequest:
    try:
        body = await request.json()
    except ValueError as exc:
        raise _BadRequest("body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return _GenRequest(
        v2=False,
        raw=_v1_raw(request),
        width=_int_field(body.get("width"), 512),
        height=_int_field(body.get("height"), 512),
        samples=_int_field(body.get("samples"), 1),
        seed=_int_field(body.get("seed"), 0),
    )


async def _parse_v1_image(request: Request) -> _GenRequest:
    form, files = await _read_form(request)
    width, height = _upload_size(files, "init_image")
    return _GenRequest(
        v2=False,
        raw=_v1_raw(request),
        width=width,
        height=height,
        samples=_int_field(form.get("samples"), 1),
        seed=_int_field(form.get("seed"), 0),
    )


async def _parse_v1_upscale(request: Request) -> _GenRequest:
    form, files = await _read_form(request)
    # The real API's field is `image`; `init_image` is accepted too, as it always was here.
    field_name = "image" if "image" in files else "init_image"
    init_width, init_height = _upload_size(files, field_name)
    width = _int_field(form.get("width"), 0)
    height = _int_field(form.get("height"), 0)
    if width and not height:
        height = round(width * init_height / init_width)
    elif height and not width:
        width = round(height * init_width / init_height)
    elif not width and not height:
        width, height = 2 * init_width, 2 * init_height
    return _GenRequest(
        v2=False,
        raw=_v1_raw(request),
        width=width,
        height=height,
        seed=_int_field(form.get("seed"), 0),
    )


async def _parse_v2(request: Request) -> _GenRequest:
    form, _ = await _read_form(request)
    aspect_ratio = str(form.get("aspect_ratio") or "1:1")
    fmt = str(form.get("output_format") or "png")
    if aspect_ratio not in V2_ASPECT_SIZES:
        raise _BadRequest(f"aspect_ratio: must be one of {', '.join(V2_ASPECT_SIZES)}")
    if fmt not in V2_FORMATS:
        raise _BadRequest(f"output_format: must be one of {', '.join(V2_FORMATS)}")
    width, height = V2_ASPECT_SIZES[aspect_ratio]
    return _GenRequest(
        v2=True,
        raw="application/json" not in request.headers.get("accept", ""),
        width=width,
        height=height,
        seed=_int_field(form.get("seed"), 0),
        fmt=fmt,
    )


async def _parse_v2_image(request: Request) -> _GenRequest:
    """v2beta upscale and edit routes: an `image` upload (`subject_image` for relight); the
    answer is that image scaled 4x (fast upscale), to 4K (conservative and creative upscale),
    grown by the margins (outpaint), or the same size (other edits)."""
    form, files = await _read_form(request)
    relight = request.url.path.endswith("/replace-background-and-relight")
    width, height = _upload_size(files, "subject_image" if relight else "image")
    fmt = str(form.get("output_format") or "png")
    if fmt not in V2_FORMATS:
        raise _BadRequest(f"output_format: must be one of {', '.join(V2_FORMATS)}")
    if request.url.path.endswith("/upscale/fast"):
        width, height = 4 * width, 4 * height
    elif "/upscale/" in request.url.path:
        scale = UPSCALE_4K_SIDE / max(width, height)
        width, height = round(width * scale), round(height * scale)
    elif request.url.path.endswith("/outpaint"):
        width += _int_field(form.get("left"), 0) + _int_field(form.get("right"), 0)
        height += _int_field(form.get("up"), 0) + _int_field(form.get("down"), 0)
    return _GenRequest(
        v2=True,
        raw="application/json" not in request.headers.get("accept", ""),
        width=width,
        height=height,
        seed=_int_field(form.get("seed"), 0),
        fmt=fmt,
    )


async def _parse_v2_control(request: Request) -> _GenRequest:
    """v2beta control routes: style draws its `aspect_ratio` (its image is a style
    reference); sketch, structure and style-transfer redraw their input (`init_image` for
    style-transfer) at its size."""
    form, files = await _read_form(request)
    fmt = str(form.get("output_format") or "png")
    if fmt not in V2_FORMATS:
        raise _BadRequest(f"output_format: must be one of {', '.join(V2_FORMATS)}")
    if request.url.path.endswith("/control/style"):
        _upload_size(files, "image")
        aspect_ratio = str(form.get("aspect_ratio") or "1:1")
        if aspect_ratio not in V2_ASPECT_SIZES:
            raise _BadRequest(f"aspect_ratio: must be one of {', '.join(V2_ASPECT_SIZES)}")
        width, height = V2_ASPECT_SIZES[aspect_ratio]
    else:
        transfer = request.url.path.endswith("/style-transfer")
        width, height = _upload_size(files, "init_image" if transfer else "image")
        if transfer:
            _upload_size(files, "style_image")
    return _GenRequest(
        v2=True,
        raw="application/json" not in request.headers.get("accept", ""),
        width=width,
        height=height,
        seed=_int_field(form.get("seed"), 0),
        fmt=fmt,
    )


# Routes the real API always answers with a job id (the image comes from /v2beta/results).
JOB_ROUTES = frozenset({"/v2beta/stable-image/edit/replace-background-and-relight"})

# The one route table for generation: path -> how to read what the request asks for.
GENERATION_ROUTES: dict[str, Callable[[Request], Awaitable[_GenRequest]]] = {
    "/v1/generation/{engine_id}/text-to-image": _parse_v1_text,
    "/v1/generation/{engine_id}/image-to-image": _parse_v1_image,
    "/v1/generation/{engine_id}/image-to-image/masking": _parse_v1_image,
    "/v1/generation/{engine_id}/image-to-image/upscale": _parse_v1_upscale,
    "/v2beta/stable-image/generate/{model}": _parse_v2,
    "/v2beta/stable-image/upscale/{kind}": _parse_v2_image,
    "/v2beta/stable-image/edit/{kind}": _parse_v2_image,
    "/v2beta/stable-image/control/{kind}": _parse_v2_control,
}
_GENERATION_PATTERNS = [compile_path(path)[0] for path in GENERATION_ROUTES]


def is_generation(method: str, path: str) -> bool:
    """Whether a request hits one of the scripted generation routes."""
    return method == "POST" and any(p.match(path) for p in _GENERATION_PATTERNS)


# --- Responses -----------------------------------------------------------------------------


def _error_response(behaviour: ApiError, *, v2: bool) -> JSONResponse:
    detail_key = "errors" if v2 else "message"
    detail: str | list[str] = [behaviour.message] if v2 else behaviour.message
    return JSONResponse(
        {"id": uuid.uuid4().hex, "name": behaviour.name, detail_key: detail},
        status_code=behaviour.status,
        headers=dict(behaviour.headers or {}),
    )


def _json_payload(req: _GenRequest, artifacts: list[_Artifact], b64: str | None = None) -> Any:
    """Stability's JSON answer; `b64` replaces every image's base64 (to corrupt it)."""

    def encode(artifact: _Artifact) -> str:
        return b64 if b64 is not None else base64.b64encode(artifact.data).decode()

    if req.v2:
        first = artifacts[0]
        return {"image": encode(first), "finish_reason": first.finish_reason, "seed": first.seed}
    return {
        "artifacts": [
            {"base64": encode(a), "seed": a.seed, "finishReason": a.finish_reason}
            for a in artifacts
        ]
    }


def _success_response(req: _GenRequest, artifacts: list[_Artifact]) -> Response:
    """Image bytes with finish-reason/seed headers, or JSON, as the request's Accept asked."""
    if not req.raw:
        return JSONResponse(_json_payload(req, artifacts))
    first = artifacts[0]
    return Response(
        first.data,
        media_type=f"image/{req.fmt}",
        headers={"Finish-Reason": first.finish_reason, "Seed": str(first.seed)},
    )


class _ResetMidBodyResponse(Response):
    """Declares the full Content-Length, sends half the body, then breaks the connection.

    Raising after a partial `more_body=True` send makes uvicorn close the transport, so the
    client sees EOF before Content-Length bytes arrived (httpx: RemoteProtocolError).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        raise _IntentionalReset("reset_mid_body behaviour")


class _DropIntentionalReset(logging.Filter):
    """Keeps uvicorn from logging a traceback for resets the fake causes on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _IntentionalReset))


_RESET_LOG_FILTER = _DropIntentionalReset()


# --- The server ----------------------------------------------------------------------------


@dataclass
class _Job:
    """A started job: what it will answer, and how many polls until it does."""

    req: _GenRequest
    artifacts: list[_Artifact]
    polls_left: int


@dataclass
class _State:
    """Everything tests and the server thread share; guarded by FakeStability._lock."""

    queue: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Ok)
    calls: list[Call] = field(default_factory=list)
    generations: int = 0
    in_flight: int = 0
    peak: int = 0
    jobs: dict[str, _Job] = field(default_factory=dict)
    by_prompt: list[tuple[str, Behaviour]] = field(default_factory=list)
    replies: dict[str, deque[Reply]] = field(default_factory=dict)


def prompt_text(body: bytes) -> str:
    """The prompts of a generation request as one string: every text_prompts[i].text of a
    JSON body; for anything else (multipart) the body decoded as far as it is text."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    prompts = payload.get("text_prompts") if isinstance(payload, dict) else None
    if not isinstance(prompts, list):
        return ""
    return "\n".join(str(p.get("text", "")) for p in prompts if isinstance(p, dict))


class FakeStability:
    """The fake Stability API on http://127.0.0.1:<free port>; see the module docstring."""

    def __init__(self, port: int = 0) -> None:
        """`port` 0 (tests): a free port, chosen at start."""
        self._requested_port = port
        self._lock = threading.Lock()
        self._state = _State()
        self._server: ThreadedServer | None = None
        self.port = 0
        self.app = self._build_app()

    # Scripting and inspection (called from the test thread).

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def default(self) -> Behaviour:
        """What generation requests get once the script is used up (initially ok())."""
        with self._lock:
            return self._state.default

    @default.setter
    def default(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._state.default = behaviour

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next generation requests, one each, in order."""
        with self._lock:
            self._state.queue.extend(behaviours)

    def for_prompt(self, text: str, behaviour: Behaviour) -> None:
        """Every generation request whose prompt contains `text` gets `behaviour`, however
        many times it comes (retries included), before the script and the default are
        consulted. For concurrent tests, where arrival order says nothing about which
        request is which."""
        with self._lock:
            self._state.by_prompt.append((text, behaviour))

    def on(self, path: str, *replies: Reply) -> None:
        """Requests to `path` (any method, any query) get these replies, one each, in order;
        the last one answers every request after it. Replaces what `path` had."""
        with self._lock:
            self._state.replies[path] = deque(replies)

    def reset(self) -> None:
        """Forget script, calls, counters and default, so a shared fake starts each test clean.

        Requests still in flight keep counting towards concurrency_peak until they finish.
        """
        with self._lock:
            in_flight = self._state.in_flight
            self._state = _State(in_flight=in_flight, peak=in_flight)

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every request received so far, in arrival-recording order."""
        with self._lock:
            return list(self._state.calls)

    def generation_calls(self) -> list[Call]:
        return [c for c in self.calls if is_generation(c.method, c.path)]

    def max_in_window(self, window_seconds: float) -> int:
        """Most generation-call arrivals in any [t, t + window_seconds): rate-limit checks."""
        return count_max_in_window([c.t for c in self.generation_calls()], window_seconds)

    @property
    def concurrency_peak(self) -> int:
        """Most generation requests in flight at once (arrival until the response finished)."""
        with self._lock:
            return self._state.peak

    # App (runs on the server thread).

    def _build_app(self) -> ASGIApp:
        generation = [
            Route(path, functools.partial(self._generate, parse), methods=["POST"])
            for path, parse in GENERATION_ROUTES.items()
        ]
        account = [
            Route("/v1/engines/list", self._engines, methods=["GET"]),
            Route("/v1/user/account", self._account, methods=["GET"]),
            Route("/v1/user/balance", self._balance, methods=["GET"]),
            Route("/v2beta/results/{id}", self._results, methods=["GET"]),
        ]
        # Last, and for every method, so anything unmatched is a Stability-shaped 404, not a 405.
        every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        fallback = [Route("/{path:path}", self._other, methods=every_method)]
        return self._recording(Starlette(routes=[*generation, *account, *fallback]))

    def _recording(self, app: ASGIApp) -> ASGIApp:
        """Wrap the app to record every request and count generation requests in flight."""

        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await app(scope, receive, send)
            arrived = time.time()
            generation = is_generation(scope["method"], scope["path"])
            if generation:
                self._count_in_flight(+1)
            try:
                body = await _read_body(receive)
                headers: dict[str, str] = {}
                for raw_name, raw_value in scope["headers"]:
                    name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                call = Call(
                    arrived,
                    scope["method"],
                    scope["path"],
                    headers,
                    body,
                    scope["query_string"].decode("latin-1"),
                )
                with self._lock:
                    self._state.calls.append(call)
                await app(scope, _replay(body, receive), send)
            finally:
                if generation:
                    self._count_in_flight(-1)

        return recorded

    def _count_in_flight(self, delta: int) -> None:
        with self._lock:
            self._state.in_flight += delta
            self._state.peak = max(self._state.peak, self._state.in_flight)

    def _next_behaviour(self, body: bytes = b"") -> tuple[Behaviour, int]:
        """A `for_prompt` behaviour matching the body, else pop the next scripted one (or
        the default); and number this generation."""
        with self._lock:
            state = self._state
            state.generations += 1
            text = prompt_text(body) if state.by_prompt else ""
            matching = [b for needle, b in state.by_prompt if needle in text]
            if matching:
                return matching[0], state.generations
            behaviour = state.queue.popleft() if state.queue else state.default
            return behaviour, state.generations

    async def _generate(
        self, parse: Callable[[Request], Awaitable[_GenRequest]], request: Request
    ) -> Response:
        """The single place where behaviours turn into responses."""
        behaviour, number = self._next_behaviour(await request.body())
        await self._sleep(behaviour.delay)
        v2 = request.url.path.startswith("/v2beta/")
        match behaviour:
            case ApiError():
                return _error_response(behaviour, v2=v2 if behaviour.v2 is None else behaviour.v2)
            case RawBody(status=status, body=body, content_type=content_type):
                return Response(body, status_code=status, media_type=content_type)
        try:
            req = await parse(request)
        except _BadRequest as exc:
            return _error_response(ApiError(400, "bad_request", str(exc)), v2=v2)
        if isinstance(behaviour, Ok) and request.url.path in JOB_ROUTES:
            behaviour = Accepted(width=behaviour.width, height=behaviour.height)
        if isinstance(behaviour, Accepted):
            sized = Ok(width=behaviour.width, height=behaviour.height)
            return self._start_job(req, await self._artifacts(req, sized, number), behaviour)
        if isinstance(behaviour, Ok):
            return _success_response(req, await self._artifacts(req, behaviour, number))
        artifacts = await self._artifacts(req, Ok(), number)
        match behaviour.kind:
            case "not_an_image":
                broken = [replace(a, data=NOT_AN_IMAGE) for a in artifacts]
                return _success_response(req, broken)
            case "corrupt_pixels":
                if req.fmt == "png":
                    artifacts = [replace(a, data=undecodable_png(a.data)) for a in artifacts]
                return _success_response(req, artifacts)
            case "invalid_base64":
                return JSONResponse(_json_payload(req, artifacts, b64=INVALID_BASE64))
            case "truncated_json":
                body = json.dumps(_json_payload(req, artifacts)).encode()
                return Response(body[: len(body) // 2], media_type="application/json")
        full = _success_response(req, artifacts)  # reset_mid_body
        return _ResetMidBodyResponse(full.body, headers=dict(full.headers))

    def _start_job(
        self, req: _GenRequest, artifacts: list[_Artifact], behaviour: Accepted
    ) -> Response:
        job_id = secrets.token_hex(32)
        with self._lock:
            self._state.jobs[job_id] = _Job(req, artifacts, behaviour.polls)
        return JSONResponse({"id": job_id}, status_code=behaviour.status)

    async def _results(self, request: Request) -> Response:
        """GET /v2beta/results/{id}: 202 while the job runs, then its image (as Accepted)."""
        job_id = request.path_params["id"]
        with self._lock:
            job = self._state.jobs.get(job_id)
            running = job is not None and job.polls_left > 0
            if job is not None and running:
                job.polls_left -= 1
        if job is None:
            missing = ApiError(404, "not_found", f"no result with id {job_id}")
            return _error_response(missing, v2=True)
        if running:
            return JSONResponse({"id": job_id, "status": "in-progress"}, status_code=202)
        raw = "application/json" not in request.headers.get("accept", "")
        return _success_response(replace(job.req, raw=raw), job.artifacts)

    async def _artifacts(self, req: _GenRequest, behaviour: Ok, number: int) -> list[_Artifact]:
        """Images for one answer; pixels depend on seed and request number, so every upstream
        answer is distinguishable from a cached one even when the seed is fixed."""
        if behaviour.seed is not None:
            base_seed = behaviour.seed
        else:
            base_seed = req.seed or random.Random(number).randrange(1, 2**32)
        width, height = behaviour.width or req.width, behaviour.height or req.height
        artifacts = []
        for index in range(max(req.samples, 1)):
            seed = base_seed + index
            reuse = behaviour.reuse_pixels and req.fmt == "png"
            # Encoding can take ~0.1 s (noisy images); keep the event loop free for other requests.
            data = await asyncio.to_thread(
                image_bytes,
                width,
                height,
                fmt=req.fmt,
                seed=0 if reuse else hash((number, seed, index)),
                noisy=behaviour.noisy,
            )
            if reuse:
                data = with_text_chunk(data, f"request {number}, artifact {index}")
            artifacts.append(_Artifact(data, seed, behaviour.finish_reason))
        return artifacts

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the fake stops, so stop() never waits out a hang()."""
        stopping = self._server.stopping if self._server is not None else None
        if seconds > 0 and stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), seconds)

    async def _engines(self, request: Request) -> Response:
        who = _who(request)
        engines = [
            ("stable-diffusion-xl-1024-v1-0", "Stable Diffusion XL 1.0", "PICTURE"),
            ("stable-diffusion-v1-6", "Stable Diffusion 1.6", "PICTURE"),
            ("esrgan-v1-x2plus", "Real-ESRGAN x2", "PICTURE"),
        ]
        return JSONResponse(
            [
                {"id": id_, "name": name, "description": name, "type": kind, "who": who}
                for id_, name, kind in engines
            ]
        )

    async def _account(self, request: Request) -> Response:
        who = _who(request)
        return JSONResponse(
            {
                "id": f"user-{who}",
                "email": f"{who}@example.test",
                "profile_picture": "",
                "organizations": [],
                "who": who,
            }
        )

    async def _balance(self, request: Request) -> Response:
        return JSONResponse({"credits": 12.5, "who": _who(request)})

    async def _other(self, request: Request) -> Response:
        """A scripted path's next reply, a built-in answer, or Stability's 404."""
        path = request.url.path
        with self._lock:
            replies = self._state.replies.get(path)
            scripted = None
            if replies:
                scripted = replies.popleft() if len(replies) > 1 else replies[0]
        if scripted is None and request.method == "POST" and path in BUILT_IN:
            scripted = BUILT_IN[path](await request.body())
        if scripted is None:
            return self._not_found(request)
        return self._reply(scripted)

    def _reply(self, answer: Reply) -> Response:
        async def body() -> AsyncIterator[bytes]:
            data, size = answer.body, max(1, answer.chunk)
            pieces = [data[at : at + size] for at in range(0, len(data), size)]
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                if (
                    last
                    and answer.hold is not None
                    and not await asyncio.to_thread(answer.hold.wait, answer.hold_seconds)
                ):
                    raise _IntentionalReset("the held reply was never released")
                yield piece

        headers = {"content-length": str(len(answer.body)), **(answer.headers or {})}
        return StreamingResponse(
            body(), status_code=answer.status, media_type=answer.content_type, headers=headers
        )

    def _not_found(self, request: Request) -> Response:
        return JSONResponse(
            {
                "id": uuid.uuid4().hex,
                "name": "not_found",
                "message": f"{request.method} {request.url.path} not found",
            },
            status_code=404,
        )

    # Lifecycle (called from the test thread).

    def start(self, timeout: float = 10.0) -> Self:
        """Serve on a fresh free port (or the one asked for); return once it accepts."""
        logger = logging.getLogger("uvicorn.error")
        if _RESET_LOG_FILTER not in logger.filters:
            logger.addFilter(_RESET_LOG_FILTER)
        self._server = ThreadedServer(self.app, port=self._requested_port, name="fake-stability")
        self._server.start(timeout)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        """Stop serving, wake any hang()s, and wait for the server thread (and port) to close."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def glb_model(request_body: bytes) -> Reply:
    """A small binary glTF 2.0 file (header and one JSON chunk) that names a hash of the
    request, so each distinct request gets distinct bytes, as Stable Fast 3D answers."""
    digest = hashlib.sha256(request_body).hexdigest()
    chunk = json.dumps({"asset": {"version": "2.0"}, "extras": {"request": digest}}).encode()
    chunk += b" " * (-len(chunk) % 4)
    total = 12 + 8 + len(chunk)
    data = b"".join(
        (
            b"glTF", (2).to_bytes(4, "little"), total.to_bytes(4, "little"),
            len(chunk).to_bytes(4, "little"), b"JSON", chunk,
        )
    )  # fmt: skip
    disposition = 'attachment; filename="model.glb"'
    return Reply(body=data, content_type="model/gltf-binary",
                 headers={"content-disposition": disposition})  # fmt: skip


def audio_clip(request_body: bytes) -> Reply:
    """Bytes that start like an MP3 file (an ID3 tag) and differ per request, with the
    finish-reason and seed headers Stability's audio routes answer."""
    digest = hashlib.sha256(request_body).digest()
    data = b"ID3\x04\x00\x00\x00\x00\x00\x00" + digest * 64
    return Reply(body=data, content_type="audio/mpeg",
                 headers={"finish-reason": "SUCCESS", "seed": str(digest[0])})  # fmt: skip


BUILT_IN: dict[str, Callable[[bytes], Reply]] = {
    "/v2beta/3d/stable-fast-3d": glb_model,
    "/v2beta/audio/stable-audio-2/text-to-audio": audio_clip,
}


def _who(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    return key_hash(authorization) if authorization else None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.fakes.stability --port N`: the fake on its own, in the foreground.

    For trying online mode locally without a key or credits: point a gateway at it with
    STABILITY_API_KEY=sk-fake STABILITY_GATEWAY_UPSTREAM_URL=http://127.0.0.1:N. Every
    generation request gets a test image of the requested size. Ctrl-C stops it.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.stability", description=main.__doc__
    )
    parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (default 8081)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    fake = FakeStability(port=args.port)
    try:
        fake.start()
    except (OSError, RuntimeError) as exc:
        print(f"fake Stability could not listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"fake Stability API listening on {fake.url} (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the already-read body to the app, then defers to the real one."""
    sent = False

    async def replayed() -> Any:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


if __name__ == "__main__":
    raise SystemExit(main())
