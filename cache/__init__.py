"""Cache layer: canonical request keys and the disk store. Knows nothing about HTTP."""

from cache.keys import KEY_VERSION, canonical_json, make_key
from cache.store import Artifact, DiskStore, Entry

__all__ = ["KEY_VERSION", "Artifact", "DiskStore", "Entry", "canonical_json", "make_key"]
