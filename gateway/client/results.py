"""The outcome of one image of a batch: what was asked, what came back, or why not."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.client.errors import ImageGenerationError
from gateway.client.stability import GeneratedImage


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome. `index` is 1-based (a script's segment position), `data` the
    final image at the output size, `image` the answer as generated (its size, seed, cache
    status, key, credits); `error` is set instead when it failed."""

    index: int
    description: str
    prompt: str | None
    negative_prompt: str
    data: bytes | None = None
    image: GeneratedImage | None = None
    error: ImageGenerationError | None = None

    @property
    def ok(self) -> bool:
        return self.data is not None

    @property
    def cache(self) -> str | None:
        """The gateway's X-Cache for this image (None when it failed or had none)."""
        return self.image.cache if self.image is not None else None


def success_rate(results: list[ImageResult]) -> float:
    """Fraction of results that succeeded; an empty batch has failed nothing (1.0)."""
    if not results:
        return 1.0
    return sum(result.ok for result in results) / len(results)
