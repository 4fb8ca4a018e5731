"""Helpers shared by the route families: reading bodies, choosing the answer format."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from gateway.errors import BadRequest

_ENGINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def engine_id(request: Request) -> str:
    """The `{engine_id}` path segment, refused unless it looks like one: it is put back
    into the upstream path, and an id like `x?y=1#` or `..` would change which URL the
    gateway's own key is sent to."""
    engine = request.path_params["engine_id"]
    if not _ENGINE_ID.fullmatch(engine):
        raise BadRequest(f"{engine[:40]!r} is not a valid engine id", name="invalid_engine_id")
    return str(engine)


async def read_json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        raise BadRequest("the request body is empty; expected a JSON object")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
        # Lone surrogates ("\ud800") parse but cannot be encoded: refuse them here rather
        # than fail later while hashing the key.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError) as exc:  # JSONDecodeError, >4300-digit ints, NaN
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, and slip through every range check (NaN < 0 and
    NaN > 35 are both false): refuse them as the real API's JSON parser would."""
    raise ValueError(f"{name} is not a valid JSON number")


def wants_image(request: Request, *, image_types: tuple[str, ...]) -> bool:
    """True when the caller's Accept asks for raw image bytes rather than JSON.

    No Accept, `*/*` and `application/json` mean JSON, as on the real API.
    """
    accept = request.headers.get("accept", "").lower()
    if not accept:
        return False
    for part in accept.split(","):
        media = part.split(";")[0].strip()
        if media == "application/json":
            return False
        if media in image_types:
            return True
    return False


# Most fields and files a multipart request may carry; Stability's routes use a handful.
MAX_FORM_FIELDS = 200
MAX_FORM_FILES = 8


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file, read whole: its bytes go into the key and upstream as sent."""

    filename: str
    content_type: str
    data: bytes

    def as_httpx(self) -> tuple[str, bytes, str]:
        return (self.filename, self.data, self.content_type)


@dataclass(frozen=True)
class MultipartForm:
    """A multipart/form-data body: text fields in the order sent, and the files."""

    fields: dict[str, str]
    files: dict[str, UploadedFile]

    def file_bytes(self) -> dict[str, bytes]:
        return {name: upload.data for name, upload in self.files.items()}


async def read_multipart(request: Request) -> MultipartForm:
    """Read a multipart/form-data body, as Stability's multipart routes require.

    A field sent twice is refused rather than guessed at: which value would Stability
    use? Upload temp files are closed before returning (the bytes are kept).
    """
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise BadRequest(
            f"this route takes multipart/form-data, got {content_type or 'no content type'!r}"
        )
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    try:
        async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS) as form:
            for name, value in form.multi_items():
                if name in fields or name in files:
                    raise BadRequest(f"{name}: the field appears more than once")
                if isinstance(value, UploadFile):
                    files[name] = UploadedFile(
                        filename=value.filename or name,
                        content_type=value.content_type or "application/octet-stream",
                        data=await value.read(),
                    )
                else:
                    fields[name] = value
    except HTTPException as exc:  # starlette's answer to a malformed multipart body
        raise BadRequest(f"the multipart body could not be read: {exc.detail}") from None
    return MultipartForm(fields, files)


def wants_json_v2(request: Request) -> bool:
    """v2beta answers image bytes unless Accept asks for application/json (its default is
    image/*): the first of the two that Accept names wins."""
    accept = request.headers.get("accept", "").lower()
    for part in accept.split(","):
        media = part.split(";")[0].strip()
        if media == "application/json":
            return True
        if media.startswith("image/"):
            return False
    return False
