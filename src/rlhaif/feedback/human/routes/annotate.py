"""Pages for annotators: sign in, the next task, submit (form post), my labels."""

from __future__ import annotations

import re
import secrets
import uuid

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from rlhaif.feedback.human.auth import (COOKIE, CurrentAnnotator, check_csrf, client_address, current_annotator,
                                        get_store, get_throttle, same_secret)
from rlhaif.feedback.human.routes.common import AssignmentId, templates
from rlhaif.feedback.human.schemas import ASPECTS, LETTERS, InvalidValue, JudgmentIn
from rlhaif.feedback.human.security import SIGN_IN_ERRORS, Throttled
from rlhaif.feedback.human.store import Store

router = APIRouter()
LOGIN_CSRF = "rlhaif_login_csrf"
NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only ('²' is a digit to str.isdigit, not to int)


def _login_page(request: Request, error: str = "", status_code: int = 200):
    token = secrets.token_urlsafe(16)
    resp = templates.TemplateResponse(request, "login.html", {"csrf": token, "error": SIGN_IN_ERRORS.get(error, ""),
                                                              "who": None}, status_code=status_code)
    resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict")
    return resp


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/next", status_code=303)


@router.get("/login")
def login_page(request: Request, error: str = ""):
    return _login_page(request, error)


@router.post("/login")
def login(request: Request, token: str = Form(max_length=200), csrf: str = Form(max_length=100),
          store: Store = Depends(get_store)):
    if not same_secret(csrf, request.cookies.get(LOGIN_CSRF, "")):
        raise HTTPException(403, "sign-in form expired: reload the page")
    throttle, addr = get_throttle(request), client_address(request)
    try:
        throttle.check(addr)
    except Throttled:
        return _login_page(request, "throttled", status_code=429)
    a = store.annotator_by_token(token.strip())
    if a is None:
        throttle.failed(addr)
        return RedirectResponse("/login?error=unknown", status_code=303)
    settings = request.app.state.settings
    sid = store.start_session(a.id, settings.session_hours * 3600)
    resp = RedirectResponse("/admin" if a.is_admin else "/next", status_code=303)
    resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=settings.secure_cookies,
                    max_age=int(settings.session_hours * 3600))
    return resp


@router.post("/logout")
def logout(request: Request, csrf: str = Form(""), who: CurrentAnnotator = Depends(current_annotator),
           store: Store = Depends(get_store)):
    check_csrf(who, csrf)
    if who.via_cookie:
        store.end_session(request.cookies.get(COOKIE, ""))  # ended on the server: the old cookie is dead
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp


@router.get("/next")
def next_task(request: Request, who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store)):
    aid = store.next_assignment(who.id)
    if aid is None:
        done, total = store.progress_of(who.id)
        return templates.TemplateResponse(request, "done.html", {"who": who, "done": done, "total": total})
    return RedirectResponse(f"/task/{aid}", status_code=303)


@router.get("/task/{assignment_id}")
def task_page(request: Request, assignment_id: AssignmentId, who: CurrentAnnotator = Depends(current_annotator),
              store: Store = Depends(get_store)):
    view = store.task_view(assignment_id, who.id)
    done, total = store.progress_of(who.id)
    return templates.TemplateResponse(request, "task.html", {
        "who": who, "t": view, "done": done, "total": total, "letters": LETTERS, "aspects": ASPECTS,
        "client_id": uuid.uuid4().hex})


def _text(form, name: str) -> str:
    """A form field as text ("" when absent); a file sent in its place is a 422."""
    v = form.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InvalidValue(f"form field {name!r} must be text, not a file")
    return v.strip()


def _number(form, name: str) -> int | str | None:
    """A numeric form field: an int when it is 1-9 ASCII digits, None when empty, else the text (the value
    check then names it)."""
    s = _text(form, name)
    return int(s) if NUMBER.fullmatch(s) else (s.upper() or None)


def _form_value(kind: str, form, n: int) -> dict:
    """The submitted form fields -> the value in screen positions (see schemas.py)."""
    if kind == "pairwise":
        return {"choice": _text(form, "choice"), "strength": _number(form, "strength")}
    if kind == "ranking":
        return {"ranks": [_number(form, f"rank_{i}") for i in range(n)]}
    if kind == "rating":
        return {"rating": _number(form, "rating")}
    if kind == "thumbs":
        return {"thumb": _text(form, "thumb")}
    return {a: _text(form, a) for a in ASPECTS}


@router.post("/task/{assignment_id}")
async def submit_form(request: Request, assignment_id: AssignmentId,
                      who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store)):
    form = await request.form()
    check_csrf(who, form.get("csrf"))
    view = await run_in_threadpool(store.task_view, assignment_id, who.id)
    dur = _text(form, "duration_ms")
    if dur and not NUMBER.fullmatch(dur):
        raise InvalidValue("duration_ms must be a whole number of milliseconds (at most 9 digits)")
    try:
        j = JudgmentIn(client_id=_text(form, "client_id"), assignment_id=assignment_id,
                       value=_form_value(view["kind"], form, len(view["responses"])),
                       duration_ms=int(dur) if dur else None)
    except ValidationError as e:
        raise HTTPException(422, f"invalid submission: {e.errors()[0]['msg']}") from None
    await run_in_threadpool(store.submit, who.id, j)
    return RedirectResponse("/next", status_code=303)


@router.get("/my")
def my_labels(request: Request, who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store)):
    return templates.TemplateResponse(request, "my.html", {"who": who, "labels": store.my_judgments(who.id)})
