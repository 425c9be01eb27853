"""JSON API for scripts (the simulated panel, the load benchmark): Bearer token or cookie + X-CSRF-Token.

The judgment path's answers are JSONResponse objects made directly (the values are plain JSON already), which
skips FastAPI's response-model validation and ``jsonable_encoder`` walk (BENCHMARKS.md, issue 19).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from rlhaif.feedback.human.auth import CurrentAnnotator, check_csrf, current_admin, current_annotator, get_store
from rlhaif.feedback.human.report import build_report
from rlhaif.feedback.human.routes.common import AssignmentId
from rlhaif.feedback.human.schemas import JudgmentIn, JudgmentOut
from rlhaif.feedback.human.store import Store

router = APIRouter(prefix="/api")


@router.get("/next")
def api_next(who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store)) -> JSONResponse:
    aid = store.next_assignment(who.id)
    return JSONResponse({"assignment": None if aid is None else store.task_view(aid, who.id)})


@router.get("/task/{assignment_id}")
def api_task(assignment_id: AssignmentId, who: CurrentAnnotator = Depends(current_annotator),
             store: Store = Depends(get_store)) -> JSONResponse:
    return JSONResponse(store.task_view(assignment_id, who.id))


@router.post("/judgments")
def api_submit(j: JudgmentIn, who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store),
               x_csrf_token: str | None = Header(default=None)) -> JSONResponse:
    check_csrf(who, x_csrf_token)
    out: JudgmentOut = store.submit(who.id, j)
    return JSONResponse(out.model_dump())


@router.get("/judgments")
def api_mine(who: CurrentAnnotator = Depends(current_annotator), store: Store = Depends(get_store)) -> list[dict]:
    return store.my_judgments(who.id)


@router.get("/report")
def api_report(who: CurrentAnnotator = Depends(current_admin), store: Store = Depends(get_store)) -> dict:
    return build_report(store)
