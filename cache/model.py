"""What the cache holds, as plain values: no I/O, no HTTP.

    Artifact   one image: bytes, seed, finish reason, media type, SHA-256
    EntryMeta  everything known about a stored entry except the image bytes
    Entry      EntryMeta + its artifacts
    ImageFile  EntryMeta + its one image as an open file, for sending without reading it

An entry is identified by its key (the request's hash) and, for each stored version of it, a
`version` token: every put makes a new version, and every consumer (the memory tier, the
fetch path's "has someone stored this since I looked?", the shared index of several
replicas) compares versions, never timestamps.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

Source = Literal["upstream", "offline"]


@dataclass(frozen=True, eq=False)
class Artifact:
    """One generated image. Compared by identity: a 2.6 MB image is never compared by value.

    Its SHA-256 is passed in when the artifact is read back from storage (where it has just
    been verified), and otherwise computed once, when first asked for: a fresh image's is
    needed only to store it, which happens after its caller has been answered.
    """

    data: bytes
    seed: int
    finish_reason: str = "SUCCESS"
    media_type: str = "image/png"
    digest: str = ""

    @property
    def sha256(self) -> str:
        if not self.digest:
            object.__setattr__(self, "digest", hashlib.sha256(self.data).hexdigest())
        return self.digest


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact as the index records it (no bytes: those live in the blob store)."""

    sha256: str
    bytes: int
    seed: int
    finish_reason: str
    media_type: str

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactInfo:
        return cls(
            artifact.sha256,
            len(artifact.data),
            artifact.seed,
            artifact.finish_reason,
            artifact.media_type,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "bytes": self.bytes,
            "seed": self.seed,
            "finish_reason": self.finish_reason,
            "media_type": self.media_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactInfo:
        return cls(
            str(data["sha256"]),
            int(data["bytes"]),
            int(data["seed"]),
            str(data["finish_reason"]),
            str(data["media_type"]),
        )


@dataclass(frozen=True)
class EntryMeta:
    """A stored entry's metadata. `summary` is what the route said about the request
    (route, engine, prompts, size, parameters...), shown by inspection as it is."""

    key: str
    version: str
    created_at: float
    artifacts: tuple[ArtifactInfo, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)
    source: Source = "upstream"
    expires_at: float | None = None
    hits: int = 0
    last_hit_at: float | None = None

    @classmethod
    def fresh(
        cls,
        key: str,
        artifacts: Sequence[Artifact],
        summary: Mapping[str, Any],
        *,
        source: Source,
        ttl: float | None,
    ) -> EntryMeta:
        """The metadata of a new version of `key`, created now (what every store's put
        writes: a new version token, so a held copy of the old one is never served)."""
        now = time.time()
        return cls(
            key=key,
            version=uuid.uuid4().hex,
            created_at=now,
            expires_at=now + ttl if ttl else None,
            artifacts=tuple(ArtifactInfo.of(a) for a in artifacts),
            summary=dict(summary),
            source=source,
        )

    @property
    def route(self) -> str:
        return str(self.summary.get("route", ""))

    @property
    def engine(self) -> str:
        return str(self.summary.get("engine", ""))

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.artifacts)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def public(self) -> dict[str, Any]:
        """What people and scripts see (inspection API, CLI): the summary's fields beside
        the entry's own. Nothing here is secret: credentials never enter an entry."""
        return {
            **self.summary,
            "key": self.key,
            "version": self.version,
            "source": self.source,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "bytes": self.bytes,
            "artifacts": [a.as_dict() for a in self.artifacts],
            "hits": self.hits,
            "last_hit_at": self.last_hit_at,
        }


@dataclass(frozen=True)
class Entry:
    meta: EntryMeta
    artifacts: Sequence[Artifact]

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def nbytes(self) -> int:
        return sum(len(a.data) for a in self.artifacts)


@dataclass(frozen=True, eq=False)
class ImageFile:
    """An entry of one image, with that image as an open file: for an answer that is the
    image itself, sent by the server straight from the file (zero-copy) and never read
    into memory. A store hands one out only for bytes it has already checked against their
    SHA-256 in this process, in a file of the recorded length; whoever holds it closes it.
    """

    meta: EntryMeta
    file: IO[bytes]

    @property
    def info(self) -> ArtifactInfo:
        return self.meta.artifacts[0]

    @property
    def version(self) -> str:
        return self.meta.version

    def close(self) -> None:
        self.file.close()


def prompt_text(summary: Mapping[str, Any]) -> str:
    """The positive prompts of an entry, one searchable string (negative ones are left out:
    people search for what is in the picture)."""
    prompts = summary.get("prompts") or []
    texts = [
        str(p.get("text", ""))
        for p in prompts
        if isinstance(p, Mapping) and float(p.get("weight", 1) or 0) >= 0
    ]
    return " | ".join(t for t in texts if t)


class VerifiedDigests:
    """Image bytes read back from storage, checked against their SHA-256 once per process
    per digest (content-addressed: the same digest is always the same bytes), and against
    their recorded length on every read (free, and it catches a truncated file)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit  # digests remembered (about 20 MB at most)
        self._seen: set[str] = set()

    def artifact(self, info: ArtifactInfo, data: bytes | None) -> Artifact | None:
        """The artifact of `info` made of `data`, or None if the bytes are missing or
        are not the ones the digest names."""
        if data is None or len(data) != info.bytes:
            return None
        if info.sha256 not in self._seen:
            if hashlib.sha256(data).hexdigest() != info.sha256:
                return None
            if len(self._seen) >= self.limit:
                self._seen.clear()
            self._seen.add(info.sha256)
        return Artifact(data, info.seed, info.finish_reason, info.media_type, info.sha256)

    def known(self, sha256: str) -> bool:
        """Whether bytes named `sha256` were already checked (`artifact` will not hash)."""
        return sha256 in self._seen

    def forget(self, sha256: str) -> None:
        self._seen.discard(sha256)

    def clear(self) -> None:
        self._seen.clear()
