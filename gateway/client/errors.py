"""Every error this package raises, under one root.

    ImageGenerationError                  root: catch this to catch them all
    ├── ContentPolicyViolationError       prompt refused (400 invalid_prompts, 403
    │                                     content_moderation) or image CONTENT_FILTERED;
    │                                     retrying cannot help, so nothing retries it
    ├── ImageValidationError              the image is not what was asked for: format,
    │                                     resolution, 10 MB or more, does not decode
    ├── ImageGenerationFailureError       a batch's success rate fell under the threshold;
    │                                     carries the per-image results
    ├── APIError                          an error answer: .status, .name, .id, as sent
    │   ├── RateLimitError                429: the gateway's own `rate_limited` queue, or
    │   │                                 Stability's after the gateway's retries
    │   ├── ServerError                   5xx: the upstream failed after retries, or the
    │   │                                 gateway could not reach it in time
    │   └── RequestRejectedError          any other 4xx (invalid_sdxl_v1_dimensions, 401...)
    ├── NetworkError                      no HTTP answer at all: refused, timed out, cut off
    ├── StyleError                        a style profile is unknown or malformed
    └── TranslationError                  a description holds text no translator covers

Errors that came from an HTTP answer carry the gateway's (or Stability's) error `name`,
`id` and `status`, so a failure can be found in the gateway's log by its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.client.results import ImageResult


class ImageGenerationError(Exception):
    """Root of this package's errors.

    `status`, `name` and `id` are the HTTP status and the error body's `name` and `id`
    when the error came from an answer; None otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.name = name
        self.id = id


class ContentPolicyViolationError(ImageGenerationError):
    """The prompt (or the image made from it) was refused by the content filter.

    `prompt` is the refused prompt, kept for analysis (it is also logged at WARNING).
    """

    def __init__(
        self,
        message: str,
        *,
        prompt: str,
        status: int | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, name=name, id=id)
        self.prompt = prompt


class ImageValidationError(ImageGenerationError):
    """An image failed validation; the message says which check (e.g. "Wrong resolution")."""


class ImageGenerationFailureError(ImageGenerationError):
    """Too few images of a batch succeeded.

    `results` holds every image's outcome in order (successes included: they were paid
    for and are kept), `success_rate` the fraction that succeeded.
    """

    def __init__(
        self, message: str, *, results: Sequence[ImageResult], success_rate: float
    ) -> None:
        super().__init__(message)
        self.results = list(results)
        self.success_rate = success_rate

    @property
    def failures(self) -> list[ImageResult]:
        return [result for result in self.results if not result.ok]


class APIError(ImageGenerationError):
    """The gateway or Stability answered with an error status."""


class RateLimitError(APIError):
    """429; `retry_after` is the answer's Retry-After in seconds, when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        name: str | None = None,
        id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, name=name, id=id)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the upstream failed (after the gateway's retries) or could not be reached."""


class RequestRejectedError(APIError):
    """Any other 4xx: the request itself is wrong (size, engine, key...)."""


class NetworkError(ImageGenerationError):
    """No HTTP answer: the connection was refused, timed out or broke."""


class StyleError(ImageGenerationError):
    """A style profile could not be found or read."""


class TranslationError(ImageGenerationError):
    """A description holds CJK text that the translator left untranslated.

    `phrase` is the first untranslated run of CJK characters ("" when the glossary
    itself could not be read).
    """

    def __init__(self, message: str, *, phrase: str = "") -> None:
        super().__init__(message)
        self.phrase = phrase
