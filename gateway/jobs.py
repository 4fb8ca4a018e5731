"""Generations that Stability answers later: a job id now, the image from a poll.

Some v2beta routes (creative upscale, for one) answer a POST with `{"id": ...}` (200 or
202) and the image only from `GET /v2beta/results/{id}`, which says 202 while the job runs
and 200 with the image once it is done. The gateway passes the id to the caller and writes
down which cache key it belongs to; when a poll brings the finished image, the image is
stored under that key, so the same request later is answered from the cache and starts no
new job. The book lives in the coordinator (the cache folder, or Redis), so it survives
restarts and is shared by worker processes; records expire with Stability's own results
(24 h). A record names the SHA-256 of the credential that started the job, so that, when
callers forward their own keys, a job's result goes only to the credential that asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from cache.interfaces import Coordinator
from gateway.generation import Generation, UpstreamRequest, Want

JOB_TTL_SECONDS = 24 * 3600
# A job answer is a tiny JSON object; anything larger is an image answer and is not parsed
# twice just to find out.
MAX_JOB_ANSWER_BYTES = 4096
JOB_STATUSES = (200, 202)


def job_id(response: httpx.Response) -> str | None:
    """The job id if this upstream answer starts a job rather than carrying an image."""
    if response.status_code not in JOB_STATUSES or len(response.content) > MAX_JOB_ANSWER_BYTES:
        return None
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or "image" in body or "artifacts" in body:
        return None
    value = body.get("id")
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Job:
    """What a finished job's image needs to be checked, stored and rendered."""

    key: str
    route: str
    engine: str
    summary: dict[str, Any]
    expected_size: tuple[int, int] | None
    expected_formats: tuple[str, ...]
    credential: str = ""  # SHA-256 of the Authorization that started it ("" with a gateway key)

    def generation(self, path: str, want: Want) -> Generation:
        """A Generation for rendering and checking the result (nothing goes upstream)."""
        return Generation(
            route=self.route,
            engine=self.engine,
            key=self.key,
            upstream=UpstreamRequest("GET", path),
            want=want,
            expected_size=self.expected_size,
            expected_formats=self.expected_formats,
            summary=self.summary,
            v2=True,
        )


class JobBook:
    """job id -> Job, in the coordinator's records."""

    def __init__(self, coordinator: Coordinator, ttl: float = JOB_TTL_SECONDS) -> None:
        self.coordinator = coordinator
        self.ttl = ttl

    async def remember(self, job: str, generation: Generation, credential: str = "") -> None:
        record = {
            "key": generation.key,
            "route": generation.route,
            "engine": generation.engine,
            "summary": generation.summary,
            "expected_size": list(generation.expected_size) if generation.expected_size else None,
            "expected_formats": list(generation.expected_formats),
            "samples": generation.samples,
            "credential": credential,
        }
        await self.coordinator.remember("job", job, record, self.ttl)

    async def get(self, job: str) -> Job | None:
        record = await self.coordinator.recall("job", job)
        if record is None:
            return None
        size = record.get("expected_size")
        return Job(
            key=record["key"],
            route=record["route"],
            engine=record["engine"],
            summary=record["summary"],
            expected_size=(int(size[0]), int(size[1])) if size else None,
            expected_formats=tuple(record["expected_formats"]),
            credential=str(record.get("credential", "")),
        )
