"""A request written late after its send slot was granted is counted from when it left.

The upstream counts the window at its end, when the request arrives; the limiter logs a
send when it grants the slot. Between the two lie the connection (a TCP and TLS handshake
for a new one) and this event loop's other work. These run the real upstream client, with
httpcore writing to the fake Stability on loopback, against the cache folder's limiter; a
transport wrapper holds the first requests back before they are written, as a slow
handshake would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from cache.local import LocalCoordinator
from gateway.config import Settings
from gateway.deadline import Deadline
from gateway.generation import UpstreamRequest
from gateway.upstream import UpstreamClient, _Unobserved
from tests.fakes.stability import FakeStability, ok

pytestmark = pytest.mark.anyio

PERIOD = 1.0
MARGIN = 0.3
LATE = 1.0  # well past the margin: without the restamp the second pair would come at 1.3 s


class HeldBack(httpx.AsyncBaseTransport):
    """The real transport, with the first `count` requests held back `seconds` before
    httpcore starts writing them."""

    def __init__(self, count: int, seconds: float) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.count = count
        self.seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.count > 0:
            self.count -= 1
            await asyncio.sleep(self.seconds)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Recorded(_Unobserved):
    """Counts the late sends; the client's other reports are ignored."""

    def __init__(self) -> None:
        self.late = 0

    def sent_late(self) -> None:
        self.late += 1


def request(i: int) -> UpstreamRequest:
    body = {"text_prompts": [{"text": f"late {i}"}], "width": 64, "height": 64}
    return UpstreamRequest("POST", "/v1/generation/e/text-to-image", json=body)


async def send_four(settings: Settings, tmp_path: Path, held: int) -> tuple[FakeStability, int]:
    """Four requests at 2 per second, the first `held` held back LATE s before writing."""
    with FakeStability() as fake:
        fake.default = ok()
        online = settings.replace(
            gateway={"upstream_url": fake.url},
            rate_limit={"limit": 2, "period_seconds": PERIOD, "margin_seconds": MARGIN},
        )
        coordinator = LocalCoordinator(tmp_path / "state", limit=2, period=PERIOD,
                                       margin=MARGIN, max_wait=30)  # fmt: skip
        observer = Recorded()
        client = UpstreamClient(online, coordinator.limiter, transport=HeldBack(held, LATE),
                                observer=observer)  # fmt: skip
        try:
            answers = await asyncio.gather(
                *(client.send(request(i), {}, deadline=Deadline(30)) for i in range(4))
            )
        finally:
            await client.aclose()
            await coordinator.close()
        assert [a.response.status_code for a in answers] == [200] * 4
        return fake, observer.late


async def test_the_next_window_opens_from_when_the_late_sends_left(
    settings: Settings, tmp_path: Path
) -> None:
    fake, late = await send_four(settings, tmp_path, held=2)
    arrivals = sorted(c.t for c in fake.generation_calls())
    assert late == 2
    assert fake.max_in_window(PERIOD) <= 2, [round(t - arrivals[0], 3) for t in arrivals]
    # The second pair came a period and the margin after the late pair arrived, not after
    # the late pair's grants (which would be 0.3 s after it arrived, at most).
    assert arrivals[2] - arrivals[1] >= PERIOD + MARGIN - 0.05


async def test_sends_written_on_time_are_not_restamped(settings: Settings, tmp_path: Path) -> None:
    fake, late = await send_four(settings, tmp_path, held=0)
    assert late == 0 and fake.max_in_window(PERIOD) <= 2
