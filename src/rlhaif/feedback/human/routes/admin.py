"""The admin page: progress, agreement, reliability, leaderboards (with a chart of the intervals), labels."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from rlhaif.feedback.human.auth import CurrentAnnotator, current_admin, get_store
from rlhaif.feedback.human.report import build_report
from rlhaif.feedback.human.routes.common import templates
from rlhaif.feedback.human.store import Store

router = APIRouter()


def ci_chart(rows: list[dict], width: int = 560, row_h: int = 22) -> dict:
    """Geometry of an inline SVG: one row per item, a dot at the rating and a line over its 95 % interval."""
    if not rows:
        return {"rows": [], "width": width, "height": 0}
    lo = min(r["lower"] for r in rows)
    hi = max(r["upper"] for r in rows)
    span = max(hi - lo, 1e-6)
    left, right = 160, width - 20
    x = lambda v: left + (v - lo) / span * (right - left)  # noqa: E731
    return {"width": width, "height": row_h * len(rows) + 24,
            "rows": [{"label": str(r["item"])[:24], "y": row_h * i + 16, "x": x(r["rating"]),
                      "x0": x(r["lower"]), "x1": x(r["upper"]), "rating": r["rating"]} for i, r in enumerate(rows)],
            "lo": round(lo), "hi": round(hi), "left": left, "right": right}


@router.get("/admin")
def admin_page(request: Request, who: CurrentAnnotator = Depends(current_admin), store: Store = Depends(get_store)):
    settings = request.app.state.settings
    rep = build_report(store, bootstrap_rounds=settings.bootstrap_rounds, cost_per_hour=settings.cost_per_hour,
                       cost_per_judgment=settings.cost_per_judgment)
    labels = store.latest_judgments()[-50:]
    return templates.TemplateResponse(request, "admin.html", {"who": who, "r": rep, "labels": labels,
                                                              "chart": ci_chart(rep["models"])})
