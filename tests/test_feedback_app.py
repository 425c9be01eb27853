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


def test_ai_suggestion_is_shown_only_when_switched_on(app_store):
    client, store, tokens = app_store
    task = store.pairwise_items("c")[0]["task"]
    store.add_ai_labels([{"task": task, "model": "judge-x", "principle": "honesty", "p": 0.2, "p_orders": [0.3, 0.9]}])
    page = _signed_in(client, tokens["ann"]).text
    assert "AI suggestion" not in page  # off by default
    store.set_ai_suggestions("c", True)
    aid = re.search(r'action="/task/(\d+)"', page).group(1)
    page = client.get(f"/task/{aid}").text
    favored = "hi number 1"  # p = 0.2 for the first response: the judge prefers the second
    letter = "A" if page.index(favored) < page.index("hi number 0") else "B"
    assert re.search(rf"AI suggestion: <b>{letter}</b> is better\s+\(judge judge-x, 80 % sure", page)


def test_bounds_auth_and_admin_only(app_store):
    client, store, tokens = app_store
    # sign-in is a form post too: without the CSRF cookie set by GET /login it is refused
    assert client.post("/login", data={"token": tokens["ann"], "csrf": "forged"}).status_code == 403
    assert client.get("/api/next").status_code == 401
    assert client.get("/next", follow_redirects=False).headers["location"] == "/login"
    r = _signed_in(client, "not-a-token")
    assert "Unknown token." in r.text
    h = {"Authorization": f"Bearer {tokens['ann']}"}
    assert client.get("/api/report", headers=h).status_code == 403
    big = {"client_id": "x" * 20, "assignment_id": 1, "value": {"choice": "A" * 70_000}}
    assert client.post("/api/judgments", json=big, headers=h).status_code == 413
    chunks = (b"x" * 1024 for _ in range(80))  # streamed: no Content-Length to check up front
    r = client.post("/api/judgments", content=chunks, headers={**h, "content-type": "application/json"})
    assert r.status_code == 413
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


@pytest.mark.parametrize("kind,form,expect", [
    ("rating", {"rating": "10"}, lambda shown: {"rating": 10}),
    ("thumbs", {"thumb": "down"}, lambda shown: {"thumb": "down"}),
    ("aspects", {"helpful": "A", "honest": "tie", "harmless": "B"},
     lambda shown: {"helpful": shown[0], "honest": "tie", "harmless": shown[1]}),
])
def test_other_kinds_render_and_post_through_the_form(tmp_path, kind, form, expect):
    db = str(tmp_path / "k.db")
    store = Store(db)
    store.migrate()
    token = store.add_annotator("eve")
    store.create_campaign("k", kind, guidelines="Be *fair*. <b>raw html</b>")
    store.import_completions("k", _recs())
    client = TestClient(create_app(Settings(db=db, bootstrap_rounds=5)))
    page = _signed_in(client, token).text
    assert {"rating": 'id="rate-10"', "thumbs": 'id="thumb-up"', "aspects": 'name="harmless"'}[kind] in page
    assert "<em>fair</em>" in page and "&lt;b&gt;raw html&lt;/b&gt;" in page  # guidelines: Markdown, HTML escaped
    assert re.search(r'<progress id="progress" value="0" max="\d+">', page)
    aid = int(re.search(r'action="/task/(\d+)"', page).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    shown_texts = re.findall(r'<pre class="text">([^<]*)</pre>', page)
    ids = {r["text"]: rid for rid, r in store.responses().items()}
    r = client.post(f"/task/{aid}", data={**form, "csrf": csrf, "client_id": uuid.uuid4().hex},
                    follow_redirects=False)
    assert r.status_code == 303
    (label,) = store.latest_judgments()  # one label, stored in response ids
    assert label["value"] == expect([ids[t] for t in shown_texts])
    store.close()


def test_each_annotator_sees_their_own_shuffled_order(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    store.migrate()
    people = [store.annotator_by_token(store.add_annotator(n)) for n in ("a", "b")]
    store.create_campaign("s", "pairwise", overlap=2)
    store.import_completions("s", [CompletionRecord(prompt_id=f"q{i}", prompt=f"p{i}", response=f"r{j} of {i}",
                                                    model=f"m{j}", index=j) for i in range(20) for j in range(2)])
    orders = [[tuple(v["responses"]) for v in store.pending_views(p.id)] for p in people]
    assert len(orders[0]) == len(orders[1]) == 20
    assert [sorted(x) for x in orders[0]] == [sorted(x) for x in orders[1]]  # the same tasks ...
    assert orders[0] != orders[1]  # ... in orders that differ between annotators
    for mine in orders:  # and for one annotator, the first-made response is not always shown first
        firsts = {x[0].startswith("r0") for x in mine}
        assert firsts == {True, False}
    store.close()


@pytest.mark.parametrize("c_agrees,c_weight,excluded", [(1, 0.0, ["c"]), (2, 0.5, [])])
def test_export_excludes_or_down_weights_unreliable_annotators(tmp_path, c_agrees, c_weight, excluded):
    # 4 pairwise tasks, 3 annotators: a and b always pick "good", c only on the first `c_agrees` tasks.
    # Leave-one-out consensus: c agrees on c_agrees of 4 units; 1/4 < 0.5 -> flagged (weight 0, excluded),
    # 2/4 -> kept with weight 0.5. a (and b): the others split wherever c says "bad" (no consensus, skipped)
    # and agree with a elsewhere -> agreement 1, weight 1.
    from rlhaif.feedback.human.schemas import JudgmentIn

    store = Store(str(tmp_path / "w.db"))
    store.migrate()
    ids = {n: store.annotator_by_token(store.add_annotator(n)).id for n in ("a", "b", "c")}
    store.create_campaign("w", "pairwise", overlap=3)
    store.import_completions("w", [CompletionRecord(prompt_id=f"q{i}", prompt=f"p{i}", response=f"{w} {i}",
                                                    model=w, index=j)
                                   for i in range(4) for j, w in enumerate(("good", "bad"))])
    for name, aid in ids.items():
        for n, v in enumerate(store.pending_views(aid)):
            want = "good" if name != "c" or n < c_agrees else "bad"
            letter = "A" if v["responses"][0].startswith(want) else "B"
            store.submit(aid, JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=v["assignment_id"],
                                         value={"choice": letter}))
    res = export_pairs(store, tmp_path / "p.jsonl", "w")
    assert res["excluded_annotators"] == excluded and res["pairs"] == 12 - 4 * len(excluded)
    assert all(p.weight == 1.0 for p in read_records(tmp_path / "p.jsonl", PairRecord))
    export_pairs(store, tmp_path / "all.jsonl", "w", exclude_flagged=False, weight_by_reliability=True)
    weights = {(p.source, p.weight) for p in read_records(tmp_path / "all.jsonl", PairRecord)}
    assert weights == {("human:a", 1.0), ("human:b", 1.0), ("human:c", c_weight)}
    store.close()


@pytest.mark.parametrize("secure", [False, True])
def test_sign_in_cookie_is_httponly_strict_and_secure_when_asked(app_store, secure):
    _, store, tokens = app_store
    client = TestClient(create_app(Settings(db=store.url, secure_cookies=secure)))
    r = _signed_in(client, tokens["ann"])
    cookie = r.history[0].headers["set-cookie"].lower()
    assert "rlhaif_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert ("secure" in cookie.replace("samesite", "")) == secure
