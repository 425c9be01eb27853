"""What every response and every write passes through: security headers, the Origin check of writes, the
sign-in throttle (per client address, bounded memory), and the fixed sign-in error messages.

Pure ASGI middleware (no per-request task or body copy), so it costs next to nothing on the judgment path.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

# The app's only script and style sheet are its own static files: nothing inline, nothing from elsewhere.
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
NO_STORE = (b"cache-control", b"no-store")  # pages and API answers show tasks and labels: never cached
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

# The sign-in page shows one of these, chosen by code (?error=unknown); any other code shows nothing.
SIGN_IN_ERRORS = {
    "unknown": "Unknown token.",
    "throttled": "Too many failed sign-ins from your address: wait a minute and try again.",
    "ended": "Your session has ended: sign in again.",
}


class SecurityHeaders:
    """Add the security headers to every answer, and ``Cache-Control: no-store`` to all but /static/."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = HEADERS if scope["path"].startswith("/static/") else HEADERS + [NO_STORE]

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [h for h in extra if h[0] not in have]
            await send(msg)

        return await self.app(scope, receive, send_with_headers)


class OriginCheck:
    """Refuse a write (POST, ...) whose ``Origin`` header names another site than the one it was sent to (403).
    ``Origin: null`` passes only with ``Sec-Fetch-Site: same-origin``. A request without Origin (scripts, old
    browsers) passes: the CSRF token still guards cookie-authenticated writes. ``allowed`` adds origins (e.g. ``https://label.example.org`` behind a proxy that rewrites Host)."""

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            if origin is not None:
                o = origin.decode("latin-1").strip().lower()
                host = headers.get(b"host", b"").decode("latin-1").lower()
                # Under Referrer-Policy: no-referrer, Chromium sends "Origin: null" on the app's own form posts;
                # its Sec-Fetch-Site header (not settable by page script) then tells same-origin from not.
                same = (urlsplit(o).netloc == host != "" if o != "null"
                        else headers.get(b"sec-fetch-site") == b"same-origin")
                if o not in self.allowed and not same:
                    resp = JSONResponse({"detail": "cross-origin request refused (Origin does not match Host)"},
                                        status_code=403)
                    return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


class Throttled(Exception):
    """Too many failed sign-ins from one address: answered 429."""


class SignInThrottle:
    """At most ``max_failures`` failed sign-ins (form or bearer token) per client address in ``window_s``;
    past that, every attempt from the address is refused until the window ends, the right token included.
    Memory is bounded: at most ``max_addresses`` addresses are tracked (the oldest is forgotten first).
    Each server process has its own (with ``uvicorn --workers N`` an address gets up to N x max_failures)."""

    def __init__(self, max_failures: int = 10, window_s: float = 60.0, max_addresses: int = 10_000):
        self.max_failures, self.window_s, self.max_addresses = max_failures, window_s, max_addresses
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address -> (first failure, count)
        self._lock = threading.Lock()

    def check(self, addr: str) -> None:
        with self._lock:
            got = self._seen.get(addr)
            if got is None:
                return
            if time.monotonic() - got[0] > self.window_s:
                del self._seen[addr]
            elif got[1] >= self.max_failures:
                raise Throttled(addr)

    def failed(self, addr: str) -> None:
        with self._lock:
            t = time.monotonic()
            first, n = self._seen.pop(addr, (t, 0))
            self._seen[addr] = (first, n + 1) if t - first <= self.window_s else (t, 1)
            while len(self._seen) > self.max_addresses:
                self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
