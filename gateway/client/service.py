"""The image service: descriptions in, a video's images (files and asset records) out.

    description -> translate -> enhance (style modifiers) -> generate at the nearest SDXL
    size (through the gateway) -> crop to the output's aspect and resize (Lanczos)
    -> validate -> save image_NNN.png -> record the asset

Images are generated `max_concurrent` at a time (Semaphore + gather); a failed image is
None (or a `failed` record) and logged with its prompt; the batch fails as a whole only
when the success rate falls under `min_success_rate`. Identical descriptions give
identical requests, so a rerun is answered from the gateway's cache and costs nothing.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from PIL import Image, ImageOps

from gateway.client.errors import (
    ImageGenerationError,
    ImageGenerationFailureError,
    ImageValidationError,
)
from gateway.client.results import ImageResult, success_rate
from gateway.client.sizes import nearest_sdxl_size
from gateway.client.stability import StabilityAIClient
from gateway.client.styles import StyleProfile
from gateway.client.translate import TranslatorLike, as_translate

if TYPE_CHECKING:
    from gateway.client.assets import Asset, AssetStore

log = logging.getLogger("gateway.client")
# Per-image failures, on a logger of their own: a caller that reports failures itself
# (the `generate` command lists them at the end) can silence just these.
failures_log = logging.getLogger("gateway.client.failures")

MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_FORMATS = ("PNG", "JPEG")
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

OnResult = Callable[[ImageResult], None]


@dataclass(frozen=True)
class ScriptRun:
    """A script's outcome: every described segment's result and its asset record."""

    project_id: str
    results: list[ImageResult]
    assets: list[Asset] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return success_rate(self.results)


class ImageGenerationService:
    """Batch image generation in one consistent style, for one video at a time.

    `assets` is an AssetStore, a SQLAlchemy URL or a SQLite path; None means SQLite at
    `{root}/assets.db`, opened on first use. `allow_cached` lets the gateway fall back to
    a cached image when Stability fails. `close()` closes the client too.
    """

    def __init__(
        self,
        client: StabilityAIClient,
        *,
        style: StyleProfile | None = None,
        output_size: tuple[int, int] = (1920, 1080),
        max_concurrent: int = 4,
        min_success_rate: float = 0.8,
        translator: TranslatorLike | None = None,
        assets: AssetStore | str | os.PathLike[str] | None = None,
        root: str | os.PathLike[str] = "projects",
        allow_cached: bool = False,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if not 0 <= min_success_rate <= 1:
            raise ValueError("min_success_rate must be between 0 and 1")
        self.client = client
        self.style = style or StyleProfile()
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.generation_size = self.style.parameters.size or nearest_sdxl_size(*self.output_size)
        self.max_concurrent = max_concurrent
        self.min_success_rate = min_success_rate
        self.translate = as_translate(translator)
        self.root = Path(root)
        self.allow_cached = allow_cached
        self._assets_spec = assets
        self._assets: AssetStore | None = None

    # --- prompts and validation -------------------------------------------------------

    def enhance_prompt(
        self,
        description: str,
        modifiers: Sequence[str] | None = None,
        *,
        global_modifiers: Sequence[str] | None = None,
    ) -> str:
        """Description (translated to English) + ", " + the style's modifiers.

        `modifiers` None uses the style's; an empty list gives the description alone.
        `global_modifiers` is the seeds' name for the same argument. Whitespace is
        collapsed and empty parts dropped, so there are no doubled commas or spaces.
        Raises TranslationError for CJK text the translator cannot translate.
        """
        chosen = modifiers if modifiers is not None else global_modifiers
        if chosen is None:
            chosen = self.style.modifiers
        text = self.translate(description)
        parts = [" ".join(text.split()).strip(" ,")]
        parts += [" ".join(m.split()).strip(" ,") for m in chosen]
        return ", ".join(part for part in parts if part)

    def validate_image(self, image_data: bytes, size: tuple[int, int] | None = None) -> bool:
        """True for a PNG or JPEG under 10 MB, of `size` (default: the output size), that
        decodes; else ImageValidationError saying which check failed."""
        expected = size or self.output_size
        if len(image_data) >= MAX_IMAGE_BYTES:
            raise ImageValidationError(
                f"File too large: {len(image_data)} bytes, must be under {MAX_IMAGE_BYTES}"
            )
        try:
            image = Image.open(io.BytesIO(image_data))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageValidationError(f"Not an image: {exc}") from None
        with image:
            if image.format not in IMAGE_FORMATS:
                raise ImageValidationError(f"Wrong format: {image.format}, expected PNG or JPEG")
            if image.size != tuple(expected):
                raise ImageValidationError(
                    f"Wrong resolution: {image.width}x{image.height}, "
                    f"expected {expected[0]}x{expected[1]}"
                )
            try:
                image.load()
            except (OSError, ValueError, SyntaxError) as exc:
                raise ImageValidationError(f"Image does not decode: {exc}") from None
        return True

    def finish_image(self, data: bytes) -> bytes:
        """The generated image at the output size, as PNG, validated.

        SDXL's sizes are never exactly 16:9, so the image is centre-cropped to the output's
        aspect (1344x768 loses 6 rows top and bottom) and resized with Lanczos, rather
        than stretched.
        """
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageValidationError(f"Not an image: {exc}") from None
        with image:
            if image.size == self.output_size and image.format == "PNG":
                final = data
            else:
                source: Image.Image = image
                if source.mode not in ("RGB", "RGBA", "L"):
                    source = source.convert("RGBA" if "A" in source.getbands() else "RGB")
                fitted = ImageOps.fit(source, self.output_size, method=Image.Resampling.LANCZOS)
                buffer = io.BytesIO()
                fitted.save(buffer, format="PNG")
                final = buffer.getvalue()
        self.validate_image(final)
        return final

    # --- batches ----------------------------------------------------------------------

    async def generate_images_parallel(
        self,
        prompts: Sequence[str],
        negative_prompt: str | None = None,
        max_concurrent: int | None = None,
    ) -> list[bytes | None]:
        """Each prompt as given (already enhanced), in order; a failure is None."""
        items = [(i, prompt, prompt, None) for i, prompt in enumerate(prompts, 1)]
        results = await self._generate(items, negative_prompt, max_concurrent)
        return [result.data for result in results]

    async def generate_images_with_fallback(
        self, descriptions: Sequence[str], config: Mapping[str, Any] | None = None
    ) -> list[bytes | None]:
        """Enhance, generate, log the success rate; under `min_success_rate` raise
        ImageGenerationFailureError (carrying every result).

        `config` takes the seeds' keys: style_modifiers, negative_prompt, max_concurrent
        (and min_success_rate); missing keys come from the style and the service.
        """
        config = config or {}
        results = await self.generate_descriptions(
            list(enumerate(descriptions, 1)),
            modifiers=config.get("style_modifiers"),
            negative_prompt=config.get("negative_prompt"),
            max_concurrent=config.get("max_concurrent"),
        )
        self.check_success(results, config.get("min_success_rate"))
        return [result.data for result in results]

    async def generate_descriptions(
        self,
        described: Sequence[tuple[int, str]],
        *,
        modifiers: Sequence[str] | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        max_concurrent: int | None = None,
        on_result: OnResult | None = None,
    ) -> list[ImageResult]:
        """(index, description) pairs -> results in the same order, failures included."""
        items: list[tuple[int, str, str | None, ImageGenerationError | None]] = []
        for index, description in described:
            try:
                items.append(
                    (index, description, self.enhance_prompt(description, modifiers), None)
                )
            except ImageGenerationError as exc:
                failures_log.error(
                    "image %d failed before generation (%s): %s", index, exc, description
                )
                items.append((index, description, None, exc))
        return await self._generate(items, negative_prompt, max_concurrent, on_result)

    def check_success(
        self, results: Sequence[ImageResult], threshold: float | None = None
    ) -> float:
        """Log the success rate; raise ImageGenerationFailureError under the threshold."""
        threshold = self.min_success_rate if threshold is None else threshold
        rate = success_rate(list(results))
        done = sum(result.ok for result in results)
        log.info("image generation success rate: %.0f%% (%d/%d)", rate * 100, done, len(results))
        if rate < threshold:
            failed = ", ".join(str(result.index) for result in results if not result.ok)
            raise ImageGenerationFailureError(
                f"image generation success rate too low: {rate:.0%} ({done}/{len(results)}), "
                f"under {threshold:.0%}; failed: {failed}",
                results=results,
                success_rate=rate,
            )
        return rate

    async def _generate(
        self,
        items: Sequence[tuple[int, str, str | None, ImageGenerationError | None]],
        negative_prompt: str | Sequence[str] | None,
        max_concurrent: int | None,
        on_result: OnResult | None = None,
    ) -> list[ImageResult]:
        negative = self.style.negative if negative_prompt is None else negative_prompt
        if not isinstance(negative, str):  # the seeds' configs give lists too
            negative = ", ".join(negative)
        gate = asyncio.Semaphore(max_concurrent or self.max_concurrent)

        async def one(
            index: int, description: str, prompt: str | None, error: ImageGenerationError | None
        ) -> ImageResult:
            if prompt is None:
                result = ImageResult(index, description, None, negative, error=error)
            else:
                result = await self._one(gate, index, description, prompt, negative)
            if on_result is not None:
                on_result(result)
            return result

        return list(await asyncio.gather(*(one(*item) for item in items)))

    async def _one(
        self, gate: asyncio.Semaphore, index: int, description: str, prompt: str, negative: str
    ) -> ImageResult:
        """One image. The semaphore bounds requests in flight, not the resizing after them,
        so the next request goes out while this image is being scaled."""
        params = self.style.parameters
        width, height = self.generation_size
        image = None
        try:
            async with gate:
                image = await self.client.generate_image(
                    prompt,
                    negative or None,
                    width=width,
                    height=height,
                    cfg_scale=params.cfg_scale,
                    steps=params.steps,
                    style_preset=params.style_preset,
                    seed=params.seed,
                    engine=params.engine,
                    allow_cached=self.allow_cached,
                )
            # Decoding, scaling and encoding take 0.1-0.4 s of CPU: off the event loop.
            final = await asyncio.to_thread(self.finish_image, image.data)
        except ImageGenerationError as exc:
            failures_log.error("image %d failed (%s); prompt: %s", index, exc, prompt)
            return ImageResult(index, description, prompt, negative, image=image, error=exc)
        return ImageResult(index, description, prompt, negative, data=final, image=image)

    # --- scripts, files and records ---------------------------------------------------

    @property
    def assets(self) -> AssetStore:
        """The asset store, opened on first use."""
        if self._assets is None:
            from gateway.client.assets import AssetStore

            spec = self._assets_spec
            if spec is None:
                self._assets = AssetStore.under(self.root)
            elif isinstance(spec, AssetStore):
                self._assets = spec
            else:
                self._assets = AssetStore(spec)
        return self._assets

    async def generate_images_for_script(
        self, project_id: str, script: Mapping[str, Any]
    ) -> list[Asset]:
        """Generate, save and record a script's images; return the completed assets.

        Everything that succeeded is saved and recorded first (it was paid for); then,
        under `min_success_rate`, ImageGenerationFailureError is raised.
        """
        run = await self.run_script(project_id, script)
        self.check_success(run.results)
        return [asset for asset in run.assets if asset.status == "completed"]

    async def run_script(
        self,
        project_id: str,
        script: Mapping[str, Any],
        *,
        on_result: OnResult | None = None,
    ) -> ScriptRun:
        """Like generate_images_for_script, but never raises for the success rate: the
        caller gets every result and record (the command builds its report from this)."""
        check_project_id(project_id)
        described = script_descriptions(script)
        log.info("generating %d images for project %s", len(described), project_id)
        results = await self.generate_descriptions(described, on_result=on_result)
        assets = self.save(project_id, results)
        return ScriptRun(project_id, results, assets)

    def image_path(self, project_id: str, index: int) -> Path:
        return self.root / project_id / "assets" / f"image_{index:03d}.png"

    def save(self, project_id: str, results: Sequence[ImageResult]) -> list[Asset]:
        """Write each finished image to its file and record every result (one transaction)."""
        from gateway.client.assets import AssetRow

        check_project_id(project_id)
        previous = {asset.index: asset for asset in self.assets.project(project_id)}
        rows = []
        for result in results:
            path = None
            if result.data is not None:
                path = self.image_path(project_id, result.index)
                write_if_changed(path, result.data)
            earlier = previous.get(result.index)
            rows.append(
                AssetRow(
                    index=result.index,
                    status="completed" if result.ok else "failed",
                    file_path=str(path) if path is not None else None,
                    meta=self._meta(result, earlier.meta if earlier is not None else None),
                    error=str(result.error) if result.error is not None else None,
                )
            )
        return self.assets.save(project_id, rows)

    def _meta(self, result: ImageResult, earlier: Mapping[str, Any] | None) -> dict[str, Any]:
        params = self.style.parameters
        image = result.image
        meta: dict[str, Any] = {
            "index": result.index,
            "description": result.description,
            "prompt": result.prompt,
            "negative_prompt": result.negative_prompt,
            "style": self.style.name,
            "engine": params.engine,
            "cfg_scale": params.cfg_scale,
            "steps": params.steps,
            "style_preset": params.style_preset,
            "seed": image.seed if image is not None else None,
            "cache_key": image.key if image is not None else None,
            "x_cache": image.cache if image is not None else None,
            "credits": image.credits if image is not None else None,
            "generated_size": list(self.generation_size),
            "final_size": list(self.output_size) if result.ok else None,
        }
        # What the image cost when it was made, carried over while the key stays the same,
        # so a rerun answered from the cache can say how many credits it saved.
        cost = image.credits if image is not None and not image.from_cache else None
        if (
            cost is None
            and earlier is not None
            and image is not None
            and image.from_cache
            and earlier.get("cache_key") == image.key
        ):
            cost = earlier.get("cost")
        meta["cost"] = cost
        return meta

    async def close(self) -> None:
        await self.client.close()
        if self._assets is not None and self._assets_spec is not self._assets:
            self._assets.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def check_project_id(project_id: str) -> None:
    """Project ids become folder names: letters, digits, '.', '_', '-', no leading dot."""
    if not isinstance(project_id, str) or not _PROJECT_ID.fullmatch(project_id):
        raise ValueError(
            f"project id must be letters, digits, '.', '_' or '-' (not starting with "
            f"'.' or '-'), got {project_id!r}"
        )


def script_descriptions(script: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(1-based segment position, image_description) for each segment that has one."""
    segments = script.get("segments") if isinstance(script, Mapping) else None
    if not isinstance(segments, list):
        raise ValueError('script: expected {"segments": [{"image_description": "..."}, ...]}')
    described = []
    for position, segment in enumerate(segments, 1):
        if not isinstance(segment, Mapping):
            raise ValueError(f"script: segment {position} is not an object")
        description = segment.get("image_description")
        if isinstance(description, str) and description.strip():
            described.append((position, description))
    return described


def write_if_changed(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename), and not at all when the file already holds
    exactly these bytes, so a rerun leaves unchanged files untouched."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
