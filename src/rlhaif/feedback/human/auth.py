"""Who is asking: the current annotator as a FastAPI dependency, and CSRF protection for form posts.

An annotator signs in with a personal token (``rlhaif feedback add-annotator``); the database holds only
its SHA-256. Signing in in a browser starts a server-side session: the HttpOnly, SameSite=Strict cookie
holds a random session id (never the token) that expires, and that signing out, ``revoke``, ``rotate-token``
and ``remove-annotator`` end at once. Scripts send ``Authorization: Bearer <token>``. Requests authenticated
by the cookie must also carry a CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) derived from the
session, which another site cannot read. Failed bearer tokens count against the sign-in throttle.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from rlhaif.feedback.human.security import SignInThrottle
from rlhaif.feedback.human.store import Store

COOKIE = "rlhaif_session"


@dataclass(frozen=True)
class CurrentAnnotator:
    id: int
    name: str
    is_admin: bool
    csrf: str
    via_cookie: bool


class NotSignedIn(Exception):
    """Raised by the dependency; HTML requests are redirected to /login, API requests get 401."""


def csrf_for(session_hash: str) -> str:
    return hmac.new(session_hash.encode(), b"rlhaif-csrf", hashlib.sha256).hexdigest()[:40]


def get_store(request: Request) -> Store:
    return request.app.state.store


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def get_throttle(request: Request) -> SignInThrottle:
    return request.app.state.throttle


def current_annotator(request: Request, store: Store = Depends(get_store)) -> CurrentAnnotator:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        throttle, addr = get_throttle(request), client_address(request)
        throttle.check(addr)
        a = store.annotator_by_token(header[7:].strip())
        if a is None:
            throttle.failed(addr)
            raise NotSignedIn()
        return CurrentAnnotator(a.id, a.name, a.is_admin, "", via_cookie=False)
    found = store.session_annotator(request.cookies.get(COOKIE, ""))
    if found is None:
        raise NotSignedIn()
    a, session_hash = found
    return CurrentAnnotator(a.id, a.name, a.is_admin, csrf_for(session_hash), via_cookie=True)


def current_admin(who: CurrentAnnotator = Depends(current_annotator)) -> CurrentAnnotator:
    if not who.is_admin:
        raise HTTPException(status_code=403, detail="admins only")
    return who


def same_secret(sent: object, expected: str) -> bool:
    """Constant-time comparison that is False (never an error) for a non-text or non-ASCII value (a form part
    decoded as UTF-7 can hold a lone surrogate, which no codec encodes; the tokens are ASCII)."""
    return (isinstance(sent, str) and sent.isascii() and bool(expected) and expected.isascii()
            and hmac.compare_digest(sent, expected))


def check_csrf(who: CurrentAnnotator, sent: str | None) -> None:
    """Cookie-authenticated writes must echo the CSRF token; bearer-token clients need not."""
    if who.via_cookie and not same_secret(sent, who.csrf):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page")
