"""Pages for annotators: sign in, the next task, submit (form post), my labels."""

from __future__ import annotations

import secrets
import uuid

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from rlhaif.feedback.human.auth import COOKIE, CurrentAnnotator, check_csrf, current_annotator, get_store
from rlhaif.feedback.human.routes.common import templates
from rlhaif.feedback.human.schemas import ASPECTS, LETTERS, JudgmentIn
from rlhaif.feedback.human.store import Store

router = APIRouter()
LOGIN_CSRF = "rlhaif_login_csrf"


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/next", status_code=303)


@router.get("/login")
def login_page(request: Request, error: str = ""):
    token = secrets.token_urlsafe(16)
    resp = templates.TemplateResponse(request, "login.html", {"csrf": token, "error": error, "who": None})
    resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict")
    return resp


@router.post("/login")
def login(request: Request, token: str = Form(max_length=200), csrf: str = Form(max_length=100),
          store: Store = Depends(get_store)):
    if not secrets.compare_digest(csrf, request.cookies.get(LOGIN_CSRF, "")):
        raise HTTPException(403, "sign-in form expired: reload the page")
    a = store.annotator_by_token(token.strip())
    if a is None:
        return RedirectResponse("/login?error=unknown+token", status_code=303)
    resp = RedirectResponse("/admin" if a.is_admin else "/next", status_code=303)
    resp.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict",
                    secure=request.app.state.settings.secure_cookies, max_age=30 * 86400)
    return resp


@router.post("/logout")
def logout(csrf: str = Form(""), who: CurrentAnnotator = Depends(current_annotator)):
    check_csrf(who, csrf)
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
def task_page(request: Request, assignment_id: int, who: CurrentAnnotator = Depends(current_annotator),
              store: Store = Depends(get_store)):
    view = store.task_view(assignment_id, who.id)
    done, total = store.progress_of(who.id)
    return templates.TemplateResponse(request, "task.html", {
        "who": who, "t": view, "done": done, "total": total, "letters": LETTERS, "aspects": ASPECTS,
        "client_id": uuid.uuid4().hex})


def _form_value(kind: str, form, n: int) -> dict:
    """The submitted form fields -> the value in screen positions (see schemas.py)."""
    if kind == "pairwise":
        s = form.get("strength") or ""
        return {"choice": form.get("choice"), "strength": int(s) if s.isdigit() else None}
    if kind == "ranking":
        ranks = []
        for i in range(n):
            r = (form.get(f"rank_{i}") or "").strip()
            ranks.append(int(r) if r.isdigit() else r.upper())
        return {"ranks": ranks}
    if kind == "rating":
        r = form.get("rating") or ""
        return {"rating": int(r) if r.isdigit() else r}
    if kind == "thumbs":
        return {"thumb": form.get("thumb")}
    return {a: form.get(a) for a in ASPECTS}


@router.post("/task/{assignment_id}")
async def submit_form(request: Request, assignment_id: int, who: CurrentAnnotator = Depends(current_annotator),
                      store: Store = Depends(get_store)):
    form = await request.form()
    check_csrf(who, form.get("csrf"))
    view = await run_in_threadpool(store.task_view, assignment_id, who.id)
    dur = form.get("duration_ms") or ""
    try:
        j = JudgmentIn(client_id=form.get("client_id") or "", assignment_id=assignment_id,
                       value=_form_value(view["kind"], form, len(view["responses"])),
                       duration_ms=int(dur) if dur.isdigit() else None)
    except ValidationError as e:
        raise HTTPException(422, f"invalid submission: {e.errors()[0]['msg']}") from None
    await run_in_threadpool(store.submit, who.id, j)
    return RedirectResponse("/next", status_code=303)


@router.get("/my")
def my_labels(request: Request, who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store)):
    return templates.TemplateResponse(request, "my.html", {"who": who, "labels": store.my_judgments(who.id)})
