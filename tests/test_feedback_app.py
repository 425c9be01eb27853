"""Routes of the annotation app (TestClient, temporary SQLite store): CSRF, retried form posts, size
bounds, admin-only pages, and the other task kinds (rating, thumbs, aspects) through to export."""

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from rlhaif.data.io import read_records
from rlhaif.data.records import CompletionRecord, PairRecord
from rlhaif.feedback.human.app import Settings, create_app
from rlhaif.feedback.human.report import export_pairs
from rlhaif.feedback.human.schemas import InvalidValue, to_canonical
from rlhaif.feedback.human.store import Store


def _recs(k=2):
    return [CompletionRecord(prompt_id="q", prompt="Say hi", response=f"hi number {j}", model=f"m{j}", index=j)
            for j in range(k)]


@pytest.fixture
def app_store(tmp_path):
    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    tokens = {"ann": store.add_annotator("ann"), "boss": store.add_annotator("boss", admin=True)}
    store.create_campaign("c", "pairwise")
    store.import_completions("c", _recs())
    yield TestClient(create_app(Settings(db=db, bootstrap_rounds=5))), store, tokens
    store.close()


def _signed_in(client, token):
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"token": token, "csrf": csrf})


def test_form_post_needs_csrf_and_a_retry_is_stored_once(app_store):
    client, store, tokens = app_store
    page = _signed_in(client, tokens["ann"]).text
    aid = re.search(r'action="/task/(\d+)"', page).group(1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = {"client_id": uuid.uuid4().hex, "choice": "B"}
    assert client.post(f"/task/{aid}", data=form, follow_redirects=False).status_code == 403  # no CSRF token
    assert store.count_judgments() == 0
    for _ in range(2):  # the browser re-sends the same form
        r = client.post(f"/task/{aid}", data={**form, "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303
    assert store.count_judgments() == 1
    # bearer clients need no CSRF token; a cookie-authenticated JSON post does
    body = {"client_id": uuid.uuid4().hex, "assignment_id": int(aid), "value": {"choice": "tie"}}
    assert client.post("/api/judgments", json=body).status_code == 403
    assert client.post("/api/judgments", json=body, headers={"X-CSRF-Token": csrf}).json()["version"] == 2


def test_bounds_auth_and_admin_only(app_store):
    client, store, tokens = app_store
    assert client.get("/api/next").status_code == 401
    assert client.get("/next", follow_redirects=False).headers["location"] == "/login"
    r = _signed_in(client, "not-a-token")
    assert "unknown token" in r.text
    h = {"Authorization": f"Bearer {tokens['ann']}"}
    assert client.get("/api/report", headers=h).status_code == 403
    big = {"client_id": "x" * 20, "assignment_id": 1, "value": {"choice": "A" * 70_000}}
    assert client.post("/api/judgments", json=big, headers=h).status_code == 413
    bad = {"client_id": uuid.uuid4().hex, "assignment_id": 1, "value": {"choice": "Z"}}
    assert client.post("/api/judgments", json=bad, headers=h).status_code == 422
    assert client.get("/api/report", headers={"Authorization": f"Bearer {tokens['boss']}"}).status_code == 200


def test_value_mapping_by_kind():
    shown = [12, 10, 11]  # response ids in the order this annotator saw them
    assert to_canonical("pairwise", {"choice": "B"}, shown[:2])["winner"] == 10
    assert to_canonical("ranking", {"ranks": [1, "f", 1]}, shown) == {"ranks": {"12": 1, "10": "F", "11": 1}}
    assert to_canonical("rating", {"rating": 10}, [5]) == {"rating": 10}
    assert to_canonical("aspects", {"helpful": "A", "honest": "tie", "harmless": "B"}, [4, 3]) == \
        {"helpful": 4, "honest": "tie", "harmless": 3}
    for kind, v, ids in [("rating", {"rating": 11}, [5]), ("thumbs", {"thumb": "sideways"}, [5]),
                         ("ranking", {"ranks": [1, 2]}, shown), ("ranking", {"ranks": [1, 2, 4]}, shown),
                         ("pairwise", {"choice": "C"}, [1, 2])]:
        with pytest.raises(InvalidValue):
            to_canonical(kind, v, ids)


@pytest.mark.parametrize("kind,values,expect", [
    ("rating", [{"rating": 8}, {"rating": 3}], [("hi number 0", "hi number 1", 1.0)]),
    ("thumbs", [{"thumb": "down"}, {"thumb": "up"}], [("hi number 1", "hi number 0", 1.0)]),
    ("aspects", [{"helpful": "tie", "honest": "tie", "harmless": "tie"}], []),
])
def test_other_kinds_export_pairs(tmp_path, kind, values, expect):
    store = Store(str(tmp_path / "k.db"))
    store.migrate()
    me = store.annotator_by_token(store.add_annotator("dan"))
    store.create_campaign("k", kind)
    store.import_completions("k", _recs())
    from rlhaif.feedback.human.schemas import JudgmentIn

    pending = store.pending(me.id)
    assert len(pending) == len(values)
    for aid, v in zip(pending, values):  # rating/thumbs: one task per response, in response order
        store.submit(me.id, JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=aid, value=v))
    res = export_pairs(store, tmp_path / "p.jsonl", "k")
    got = [(p.chosen, p.rejected, p.p) for p in read_records(tmp_path / "p.jsonl", PairRecord)] if res["pairs"] else []
    assert got == expect
    store.close()
