"""The seeds' test 9: three images from the real Stability API, end to end.

Costs real credits (about $0.06) and needs the network, so it is marked `integration` and
skipped unless STABILITY_API_KEY is set. Run it on purpose:

    STABILITY_API_KEY=sk-... .venv/bin/pytest -m integration tests/test_client_integration.py

It talks to api.stability.ai directly (no gateway): the client must work without one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from gateway.client import ImageGenerationService, StabilityAIClient, StyleProfile

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("STABILITY_API_KEY"), reason="needs a real STABILITY_API_KEY"
    ),
]


@pytest.mark.anyio
async def test_9_full_flow_against_the_real_api(tmp_path: Path) -> None:
    style = StyleProfile(
        modifiers=["cinematic lighting", "4k quality"], negative_prompt="blurry, low quality"
    )
    script = {
        "segments": [
            {"image_description": "A beautiful sunset over mountains"},
            {"image_description": "A busy city street at night"},
            {"image_description": "A peaceful beach with palm trees"},
        ]
    }
    client = StabilityAIClient(base_url="https://api.stability.ai")
    async with ImageGenerationService(client, style=style, root=tmp_path) as service:
        assets = await service.generate_images_for_script("integration", script)
    assert len(assets) == 3
    for asset in assets:
        assert (asset.asset_type, asset.status) == ("image", "completed")
        assert asset.meta["prompt"].endswith(", cinematic lighting, 4k quality")
        assert asset.file_path is not None
        with Image.open(asset.file_path) as image:
            assert image.size == (1920, 1080)
