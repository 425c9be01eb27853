"""Who is asking: the current annotator as a FastAPI dependency, and CSRF protection for form posts.

An annotator signs in with a personal token (``rlhaif feedback add-annotator``); the database holds only
its SHA-256. Browsers carry the token in an HttpOnly, SameSite=Strict cookie; scripts send
``Authorization: Bearer <token>``. Requests authenticated by the cookie must also carry a CSRF token
(form field ``csrf`` or header ``X-CSRF-Token``) derived from the stored hash, which another site cannot read.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from rlhaif.feedback.human.store import Store

COOKIE = "rlhaif_token"


@dataclass(frozen=True)
class CurrentAnnotator:
    id: int
    name: str
    is_admin: bool
    csrf: str
    via_cookie: bool


class NotSignedIn(Exception):
    """Raised by the dependency; HTML requests are redirected to /login, API requests get 401."""


def csrf_for(token_hash: str) -> str:
    return hmac.new(token_hash.encode(), b"rlhaif-csrf", hashlib.sha256).hexdigest()[:40]


def get_store(request: Request) -> Store:
    return request.app.state.store


def current_annotator(request: Request, store: Store = Depends(get_store)) -> CurrentAnnotator:
    header = request.headers.get("authorization", "")
    via_cookie = not header.lower().startswith("bearer ")
    token = request.cookies.get(COOKIE, "") if via_cookie else header[7:].strip()
    a = store.annotator_by_token(token)
    if a is None:
        raise NotSignedIn()
    return CurrentAnnotator(a.id, a.name, a.is_admin, csrf_for(a.token_hash), via_cookie)


def current_admin(who: CurrentAnnotator = Depends(current_annotator)) -> CurrentAnnotator:
    if not who.is_admin:
        raise HTTPException(status_code=403, detail="admins only")
    return who


def check_csrf(who: CurrentAnnotator, sent: str | None) -> None:
    """Cookie-authenticated writes must echo the CSRF token; bearer-token clients need not."""
    if who.via_cookie and not hmac.compare_digest(sent or "", who.csrf):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page")
