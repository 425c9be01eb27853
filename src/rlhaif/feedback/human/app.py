"""The annotation app: ``create_app(settings)`` builds a FastAPI application over a feedback store.

Server-rendered pages (Jinja2, autoescape on) with a little JavaScript for keyboard shortcuts, plus a
JSON API for scripts. No torch is imported here (a test checks).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from rlhaif.feedback.human.auth import NotSignedIn
from rlhaif.feedback.human.schemas import MAX_BODY, InvalidValue
from rlhaif.feedback.human.security import OriginCheck, SecurityHeaders, SignInThrottle, Throttled
from rlhaif.feedback.human.store import Conflict, NotFound, Store

HERE = Path(__file__).parent


class Settings(BaseModel):
    """Settings of the annotation server."""

    model_config = ConfigDict(extra="forbid")
    db: str
    """The feedback store: a SQLite file path or a database URL (postgresql://...)."""
    migrate: bool = True
    """Run the Alembic migrations on startup (create or upgrade the schema; labels are kept)."""
    secure_cookies: bool = False
    """Mark the sign-in cookie Secure (set when served over HTTPS)."""
    bootstrap_rounds: int = 100
    """Bootstrap rounds for the admin page's confidence intervals."""
    session_hours: float = 12.0
    """How long a browser sign-in lasts (the session ends earlier on sign-out, revoke or rotate-token)."""
    sign_in_failures: int = 10
    """Failed sign-ins (form or bearer token) allowed per client address per minute; then 429 for the minute."""
    allowed_origins: list[str] = []
    """Origins accepted on writes besides the one the request was sent to (e.g. behind a Host-rewriting proxy)."""
    cost_per_hour: Optional[float] = Field(None, ge=0)
    """What an annotator's hour costs: the admin page then shows the cost and the cost per usable pair."""
    cost_per_judgment: Optional[float] = Field(None, ge=0)
    """Or what one judgment costs."""


class BodyLimit:
    """Reject request bodies over ``MAX_BODY`` bytes (by Content-Length, and while streaming)."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or {}).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            resp = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
            return await resp(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:  # a streamed body without Content-Length: the route answers 413
                raise HTTPException(status_code=413, detail=f"request body over {self.limit} bytes")
            return msg

        return await self.app(scope, limited, send)


class AnnotationApp(FastAPI):
    """FastAPI with the security headers outside Starlette's error middleware, so that an unexpected error's
    500 carries them too (a middleware added with ``add_middleware`` sits inside it)."""

    def build_middleware_stack(self):
        return SecurityHeaders(super().build_middleware_stack())


def validation_detail(errors: list[dict]) -> str:
    """A refused request's one-line reason: each field's place and pydantic's message, never the input (an
    answer must not echo what was sent; NaN and lone surrogates cannot even be written as JSON)."""
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(x) if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(x)) else "?" for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid value')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    text = "invalid request: " + "; ".join(parts) + more
    return text.encode("ascii", "replace").decode().replace("\n", " ")[:250]


def create_app(settings: Settings) -> FastAPI:
    from rlhaif.feedback.human.routes import admin, annotate, api

    store = Store(settings.db)
    if settings.migrate:
        store.migrate()
    else:
        store.check_ready()
    # No trailing-slash redirects: Starlette builds them from the Host header (an absolute URL to any host).
    app = AnnotationApp(title="rlhaif annotation", docs_url=None, redoc_url=None, openapi_url=None,
                        redirect_slashes=False)
    app.state.store = store
    app.state.settings = settings
    app.state.throttle = SignInThrottle(max_failures=settings.sign_in_failures)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(annotate.router)
    app.include_router(admin.router)
    app.include_router(api.router)
    app.add_middleware(BodyLimit)
    app.add_middleware(OriginCheck, allowed=tuple(settings.allowed_origins))

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "sign in: send 'Authorization: Bearer <token>'"}, status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Throttled)
    async def _throttled(request: Request, exc: Throttled):
        return JSONResponse({"detail": "too many failed sign-ins from your address: wait a minute"},
                            status_code=429, headers={"Retry-After": "60"})

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(InvalidValue)
    async def _invalid(request: Request, exc: InvalidValue):
        return JSONResponse({"detail": f"invalid value: {exc}"}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory --workers N rlhaif.feedback.human.app:app_from_env``: each worker process builds
    the app over the store named by RLHAIF_FEEDBACK_DB (the schema must be migrated already)."""
    return create_app(Settings(db=os.environ["RLHAIF_FEEDBACK_DB"], migrate=False))
