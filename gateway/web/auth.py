"""Who may see the gallery, and which form posts are the gallery's own.

The gallery follows the inspection API's rule (gateway/inspect_api.py):

    admin token set       a person logs in once: a form POSTs the token, and the answer sets
                          an HttpOnly, SameSite=Strict cookie holding a session value derived
                          from the token (never the token itself, never in a URL). Scripts
                          may send `Authorization: Bearer <token>` instead.
    no token, loopback    open, but only to requests whose Host is a loopback name or
                          address: a web page cannot reach it by DNS rebinding (a name of
                          its own that resolves to 127.0.0.1)
    no token, exposed     closed, saying to set STABILITY_GATEWAY_ADMIN_TOKEN

A session value is `v1.<issued>.<HMAC-SHA256(token, issued)>`: stateless, so every worker
process (and replica) checks it alike and a restart keeps people logged in; it expires after
SESSION_SECONDS, and changing the token ends every session at once.

Form posts (delete, login, logout) must come from the gallery's own pages: besides the
SameSite=Strict cookie, the browser's Origin header (or Sec-Fetch-Site, or the Referer) must
name this very host. A post saying nothing of where it came from is refused: every browser
in use sends Origin with a POST.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from enum import Enum
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "stability_gateway_gallery"
COOKIE_PATH = "/gallery"
SESSION_SECONDS = 24 * 3600
CLOCK_SKEW_SECONDS = 60
_CONTEXT = b"stability-gateway gallery session v1:"


class Access(Enum):
    OPEN = "open"  # let it through
    LOGIN = "login"  # a token is set and this request does not carry a valid session
    CLOSED = "closed"  # exposed beyond loopback without a token
    FOREIGN_HOST = "foreign_host"  # open mode, but the Host is not a loopback name


def session_value(token: str, issued: int) -> str:
    mac = hmac.new(token.encode(), _CONTEXT + str(issued).encode(), hashlib.sha256)
    return f"v1.{issued}.{mac.hexdigest()}"


def valid_session(token: str, value: str, now: float) -> bool:
    version, _, rest = value.partition(".")
    issued_text, _, _ = rest.partition(".")
    if version != "v1" or not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    if issued > now + CLOCK_SKEW_SECONDS or now - issued > SESSION_SECONDS:
        return False
    return hmac.compare_digest(value.encode(), session_value(token, issued).encode())


def _netloc(url: str) -> str:
    """The host[:port] of a URL, lower case; "" for one that cannot be parsed (`[::1`)."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def loopback_host(host_header: str) -> bool:
    """Whether a Host header names this machine's loopback: localhost, 127.0.0.0/8, [::1]."""
    try:
        host = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this host (see the module docstring).

    Hosts are compared, not schemes: behind a TLS-terminating proxy the gateway sees http
    while the browser says https, and a foreign site cannot name this host as its origin."""
    own = (request.headers.get("host") or "").lower()
    if not own:
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and _netloc(origin) == own
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    referer = request.headers.get("referer")
    if referer:
        return _netloc(referer) == own
    return False


class GalleryAuth:
    def __init__(self, admin_token: str, *, exposed: bool) -> None:
        self.admin_token = admin_token
        self.exposed = exposed

    @property
    def token_required(self) -> bool:
        return bool(self.admin_token)

    def check(self, request: Request) -> Access:
        if not self.admin_token:
            if self.exposed:
                return Access.CLOSED
            if not loopback_host(request.headers.get("host", "")):
                return Access.FOREIGN_HOST
            return Access.OPEN
        if self.bearer_ok(request):
            return Access.OPEN
        value = request.cookies.get(COOKIE)
        if value and valid_session(self.admin_token, value, time.time()):
            return Access.OPEN
        return Access.LOGIN

    def bearer_ok(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(given.strip())

    def token_matches(self, given: str) -> bool:
        # Digests first: compare_digest on equal lengths, so not even the length leaks.
        return bool(self.admin_token) and hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(),
            hashlib.sha256(self.admin_token.encode()).digest(),
        )

    def start_session(self, request: Request, response: Response) -> None:
        response.set_cookie(
            COOKIE,
            session_value(self.admin_token, int(time.time())),
            max_age=SESSION_SECONDS,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def end_session(response: Response) -> None:
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
