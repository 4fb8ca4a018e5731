"""The video team's client library: Stability client, image service, styles, assets.

    async with StabilityAIClient(base_url="http://127.0.0.1:8080") as client:
        service = ImageGenerationService(client, style=StyleProfile.load("cinematic"))
        assets = await service.generate_images_for_script("demo", script)

It talks HTTP (httpx) to a gateway, or to Stability directly, and imports nothing of the
gateway's server. Names are loaded on first use (PEP 562), so that `stability-gateway
serve`, whose CLI registers the `generate` command from this package, does not pay for
SQLAlchemy and Pillow at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.client.assets import Asset, AssetStore
    from gateway.client.errors import (
        APIError,
        ContentPolicyViolationError,
        ImageGenerationError,
        ImageGenerationFailureError,
        ImageValidationError,
        NetworkError,
        RateLimitError,
        RequestRejectedError,
        ServerError,
        StyleError,
        TranslationError,
    )
    from gateway.client.results import ImageResult
    from gateway.client.service import ImageGenerationService, ScriptRun
    from gateway.client.sizes import SDXL_V1_SIZES, nearest_sdxl_size
    from gateway.client.stability import GeneratedImage, StabilityAIClient
    from gateway.client.styles import StyleParams, StyleProfile
    from gateway.client.translate import GlossaryTranslator, Translator

_EXPORTS: dict[str, str] = {
    "APIError": "errors",
    "Asset": "assets",
    "AssetStore": "assets",
    "ContentPolicyViolationError": "errors",
    "GeneratedImage": "stability",
    "GlossaryTranslator": "translate",
    "ImageGenerationError": "errors",
    "ImageGenerationFailureError": "errors",
    "ImageGenerationService": "service",
    "ImageResult": "results",
    "ImageValidationError": "errors",
    "NetworkError": "errors",
    "RateLimitError": "errors",
    "RequestRejectedError": "errors",
    "SDXL_V1_SIZES": "sizes",
    "ScriptRun": "service",
    "ServerError": "errors",
    "StabilityAIClient": "stability",
    "StyleError": "errors",
    "StyleParams": "styles",
    "StyleProfile": "styles",
    "TranslationError": "errors",
    "Translator": "translate",
    "nearest_sdxl_size": "sizes",
}

__all__ = [
    "SDXL_V1_SIZES",
    "APIError",
    "Asset",
    "AssetStore",
    "ContentPolicyViolationError",
    "GeneratedImage",
    "GlossaryTranslator",
    "ImageGenerationError",
    "ImageGenerationFailureError",
    "ImageGenerationService",
    "ImageResult",
    "ImageValidationError",
    "NetworkError",
    "RateLimitError",
    "RequestRejectedError",
    "ScriptRun",
    "ServerError",
    "StabilityAIClient",
    "StyleError",
    "StyleParams",
    "StyleProfile",
    "TranslationError",
    "Translator",
    "nearest_sdxl_size",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gateway.client.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
