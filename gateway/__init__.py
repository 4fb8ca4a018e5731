"""stability-gateway: a caching, rate-limited drop-in gateway for Stability AI's REST API.

Light on purpose: importing `gateway` (for the CLI's cache commands, or the client library
in gateway.client) does not import the web stack. The app factory is `gateway.app.create_app`.
"""

__all__: list[str] = []
