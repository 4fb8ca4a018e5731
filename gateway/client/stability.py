"""The Stability client: one text-to-image call, to a gateway or to Stability itself.

It sends exactly the request the seeds specify (positive prompt weight 1, negative weight
-1, `samples: 1`) and turns the answer into a `GeneratedImage` or one of the errors in
`gateway.client.errors`. It deliberately has no retries, rate limiter or fallback of its
own: the gateway does all three for every caller at once (one shared limit, one place to
log retries, one cache to fall back on). Pointed at `https://api.stability.ai` directly it
still works, one attempt per call, so a failure surfaces at once instead of being retried
against a limit that other callers share.
"""

from __future__ import annotations

import binascii
import logging
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from gateway.client.errors import (
    APIError,
    ContentPolicyViolationError,
    ImageGenerationError,
    ImageValidationError,
    NetworkError,
    RateLimitError,
    RequestRejectedError,
    ServerError,
)

log = logging.getLogger("gateway.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_ENGINE = "stable-diffusion-xl-1024-v1-0"
# Error names with which Stability refuses a prompt on content grounds (v1 and v2beta).
CONTENT_POLICY_NAMES = frozenset({"invalid_prompts", "content_moderation"})
CONTENT_FILTERED = "CONTENT_FILTERED"


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image and what the gateway said about it.

    `cache` is the gateway's X-Cache (HIT, MISS, STALE, BYPASS, OFFLINE; None straight from
    Stability), `key` its X-Cache-Key, `credits` its X-Credits-Charged (None when it does
    not say). `width` and `height` are the size that was asked for.
    """

    data: bytes
    seed: int | None
    finish_reason: str
    cache: str | None = None
    key: str | None = None
    credits: float | None = None
    width: int = 0
    height: int = 0

    @property
    def from_cache(self) -> bool:
        """True when no credit was spent on this answer (a cache hit or the fallback)."""
        return self.cache in ("HIT", "STALE")


class StabilityAIClient:
    """Async client for `POST /v1/generation/{engine}/text-to-image`.

    `api_key` defaults to $STABILITY_API_KEY; with none the request carries no
    Authorization (a gateway holding its own key needs none). `transport` is the test seam
    (an `httpx.AsyncBaseTransport`, e.g. `httpx.MockTransport` or respx). The key is never
    logged and never part of `repr()`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 120,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("STABILITY_API_KEY", "")
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            # Batches run several calls at once; never make one wait for a free connection.
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def __repr__(self) -> str:
        return f"StabilityAIClient(base_url={self.base_url!r})"

    async def generate_image(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        width: int = 1344,
        height: int = 768,
        cfg_scale: float = 8,
        steps: int = 40,
        style_preset: str | None = None,
        seed: int = 0,
        engine: str = DEFAULT_ENGINE,
        allow_cached: bool = False,
    ) -> GeneratedImage:
        """Generate one image.

        `seed` 0 asks for a random image; the gateway (default policy) caches the first
        one, so the same call again is a HIT. `allow_cached` lets the gateway answer with
        its cached image when Stability fails (X-Cache: STALE, logged here at WARNING).

        Raises ContentPolicyViolationError, RateLimitError, ServerError,
        RequestRejectedError, NetworkError, or ImageValidationError for an answer whose
        image cannot be read.
        """
        body = request_body(
            prompt,
            negative_prompt,
            width=width,
            height=height,
            cfg_scale=cfg_scale,
            steps=steps,
            style_preset=style_preset,
            seed=seed,
        )
        headers = {"X-Allow-Cached": "true"} if allow_cached else {}
        path = f"/v1/generation/{engine}/text-to-image"
        try:
            response = await self._http.post(path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise NetworkError(f"{self.base_url} did not answer in time ({exc!r})") from exc
        except httpx.TransportError as exc:
            raise NetworkError(f"cannot reach {self.base_url}: {exc!r}") from exc
        if response.status_code != 200:
            raise error_for(response, prompt)
        image = parse_answer(response, prompt, width=width, height=height)
        if image.cache == "STALE":
            log.warning(
                "Stability failed; the gateway served its cached image instead "
                "(X-Cache: STALE, key=%s) for prompt: %s",
                (image.key or "?")[:16], prompt,
            )  # fmt: skip
        return image

    async def ping(self, timeout: float = 5) -> None:
        """Raise NetworkError unless something answers HTTP at base_url.

        GET /healthz: a gateway answers 200; Stability a 404, which proves as much. No
        credit, no rate-limit slot.
        """
        try:
            await self._http.get("/healthz", timeout=timeout)
        except httpx.TransportError as exc:
            raise NetworkError(f"cannot reach {self.base_url}: {exc!r}") from exc

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def request_body(
    prompt: str,
    negative_prompt: str | None,
    *,
    width: int,
    height: int,
    cfg_scale: float,
    steps: int,
    style_preset: str | None,
    seed: int,
) -> dict[str, Any]:
    """The seeds' request body. Identical arguments give an identical body, which is what
    lets the gateway's cache answer a rerun without spending a credit."""
    prompts: list[dict[str, Any]] = [{"text": prompt, "weight": 1}]
    if negative_prompt:
        prompts.append({"text": negative_prompt, "weight": -1})
    body: dict[str, Any] = {
        "text_prompts": prompts,
        "cfg_scale": cfg_scale,
        "height": height,
        "width": width,
        "samples": 1,
        "steps": steps,
        "seed": seed,
    }
    if style_preset:
        body["style_preset"] = style_preset
    return body


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None, str]:
    """(name, id, message) from `{"id","name","message"}` or `{"id","name","errors"}`."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        text = response.text.strip()[:200] or response.reason_phrase
        return None, None, text
    name = payload.get("name") if isinstance(payload.get("name"), str) else None
    error_id = payload.get("id") if isinstance(payload.get("id"), str) else None
    message = payload.get("message")
    if not isinstance(message, str):
        errors = payload.get("errors")
        if isinstance(errors, list) and errors:
            message = "; ".join(str(e) for e in errors)
        else:
            message = response.reason_phrase or "error"
    return name, error_id, message


def error_for(response: httpx.Response, prompt: str) -> ImageGenerationError:
    """The error for a non-200 answer, carrying its status, name and id."""
    status = response.status_code
    name, error_id, message = _error_fields(response)
    text = f"{status} {name or 'error'}: {message}" + (f" (id {error_id})" if error_id else "")
    fields: dict[str, Any] = {"status": status, "name": name, "id": error_id}
    if name in CONTENT_POLICY_NAMES and status in (400, 403):
        log.warning("content policy refused the prompt (%s): %s", text, prompt)
        return ContentPolicyViolationError(text, prompt=prompt, **fields)
    if status == 429:
        return RateLimitError(text, retry_after=_retry_after(response), **fields)
    if status >= 500:
        return ServerError(text, **fields)
    if 400 <= status < 500:
        return RequestRejectedError(text, **fields)
    return APIError(text, **fields)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _credits(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["x-credits-charged"])
    except (KeyError, ValueError):
        return None


def parse_answer(
    response: httpx.Response, prompt: str, *, width: int, height: int
) -> GeneratedImage:
    """The first artifact of a 200 JSON answer, decoded; CONTENT_FILTERED is an error."""
    malformed = APIError(
        "the answer is not Stability's JSON with artifacts", status=200, name="bad_answer"
    )
    try:
        payload = response.json()
        artifact = payload["artifacts"][0]
        encoded = artifact["base64"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise malformed from None
    if not isinstance(encoded, str):
        raise malformed
    finish_reason = str(artifact.get("finishReason") or "SUCCESS")
    cache = response.headers.get("x-cache")
    if finish_reason == CONTENT_FILTERED:
        log.warning("content filter blurred the image (CONTENT_FILTERED) for prompt: %s", prompt)
        raise ContentPolicyViolationError(
            "the image was CONTENT_FILTERED", prompt=prompt, status=200, name=CONTENT_FILTERED
        )
    if finish_reason != "SUCCESS":
        raise ServerError(f"generation finished with {finish_reason}", status=200)
    try:
        data = binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error as exc:
        raise ImageValidationError(f"the image's base64 does not decode: {exc}") from None
    seed = artifact.get("seed")
    return GeneratedImage(
        data=data,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        finish_reason=finish_reason,
        cache=cache,
        key=response.headers.get("x-cache-key"),
        credits=_credits(response),
        width=width,
        height=height,
    )
