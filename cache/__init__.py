"""Cache layer: canonical request keys, the model of an entry, the storage and
coordination interfaces and their backends. Knows nothing about HTTP."""

from cache.keys import KEY_VERSION, canonical_json, make_key
from cache.model import Artifact, ArtifactInfo, Entry, EntryMeta

__all__ = [
    "KEY_VERSION",
    "Artifact",
    "ArtifactInfo",
    "Entry",
    "EntryMeta",
    "canonical_json",
    "make_key",
]
