"""stability-gateway: a caching, rate-limited drop-in gateway for Stability AI's REST API."""

from gateway.app import create_app
from gateway.config import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]
