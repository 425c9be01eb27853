"""The annotation app against an attacker (TestClient, temporary SQLite store): security headers, sanitised
guidelines, server-side sessions and revocation, inputs that used to crash a request, blinding of response
ids, sign-in throttling, the edit-history cap, the Origin check, fixed sign-in messages and file modes."""

import json
import os
import random
import re
import stat
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rlhaif.data.records import CompletionRecord
from rlhaif.errors import RlhaifError
from rlhaif.feedback.human import models as m
from rlhaif.feedback.human.app import Settings, create_app
from rlhaif.feedback.human.auth import COOKIE
from rlhaif.feedback.human.routes.common import guidelines_html
from rlhaif.feedback.human.schemas import MAX_VERSIONS, JudgmentIn
from rlhaif.feedback.human.security import SignInThrottle
from rlhaif.feedback.human.store import Store, write_secret

EVIL_GUIDELINES = "Read [the rules](javascript:alert(document.cookie)) and [this](https://example.org/x)."


def _recs(prompts=("q",), k=2):
    return [CompletionRecord(prompt_id=p, prompt=f"Say hi {p}", response=f"hi number {j} for {p}", model=f"m{j}",
                             index=j) for p in prompts for j in range(k)]


@pytest.fixture
def env(tmp_path):
    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    tokens = {"ann": store.add_annotator("ann"), "bob": store.add_annotator("bob"),
              "boss": store.add_annotator("boss", admin=True)}
    store.create_campaign("c", "pairwise", guidelines=EVIL_GUIDELINES)
    store.import_completions("c", _recs(("q1", "q2", "q3", "q4")))
    store.create_campaign("r", "ranking")
    store.import_completions("r", _recs(("r1", "r2"), k=3))
    app = create_app(Settings(db=db, bootstrap_rounds=5))
    yield app, store, tokens
    store.close()


def _client(app):
    return TestClient(app, raise_server_exceptions=False)


def _sign_in(client, token):
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"token": token, "csrf": csrf}, follow_redirects=False)


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _pending(store, token, kind):
    me = store.annotator_by_token(token)
    return [v for v in store.pending_views(me.id) if v["kind"] == kind]


# ------------------------------------------------------------------ headers and guidelines

def test_security_headers_on_pages_api_and_refusals(env):
    app, store, tokens = env
    c = _client(app)
    r = _sign_in(c, tokens["ann"])
    task = c.get(r.headers["location"], follow_redirects=True)
    answers = [task, c.get("/login"), c.get("/api/next", headers=_bearer(tokens["ann"])), _client(app).get("/api/next"),
               c.get("/my"), c.get("/task/999999"), c.get("/admin")]
    assert [a.status_code for a in answers] == [200, 200, 200, 401, 200, 404, 403]
    for a in answers:
        csp = a.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert a.headers["x-content-type-options"] == "nosniff"
        assert a.headers["referrer-policy"] == "no-referrer"
        assert a.headers["cache-control"] == "no-store"  # tasks and labels are never cached
    static = c.get("/static/annotate.js")
    assert static.status_code == 200 and static.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in static.headers.get("cache-control", "")
    # the page has no inline script or style for the policy to break
    assert not re.search(r"<script>|<script [^>]*>[^<]|\sstyle=|\son[a-z]+=", task.text)


def test_guidelines_keep_only_safe_links(env):
    app, store, tokens = env
    c = _client(app)
    _sign_in(c, tokens["ann"])
    page = c.get("/next").text
    assert "javascript:" not in page
    assert '<a href="https://example.org/x" rel="noopener noreferrer">this</a>' in page
    assert re.search(r"<a rel=\"noopener noreferrer\">the rules</a>", page)  # the link text stays, href gone
    for src, kept in [("[x](mailto:a@b.org)", 'href="mailto:a@b.org"'), ("[x](data:text/html,hi)", "<a rel"),
                      ("[x](vbscript:msgbox)", "<a rel"), ('<img src=x onerror="alert(1)">', "&lt;img"),
                      ("[x](JaVaScRiPt:alert(1))", "<a rel")]:
        out = guidelines_html(src)
        assert kept in out, out
        assert "<img" not in out and "script:" not in out.lower() and "data:" not in out, out


# ------------------------------------------------------------------ sessions and revocation

def test_cookie_holds_a_session_not_the_token_and_sign_out_ends_it(env):
    app, store, tokens = env
    c = _client(app)
    r = _sign_in(c, tokens["ann"])
    sid = r.cookies[COOKIE]
    assert sid and tokens["ann"] not in r.headers["set-cookie"]
    assert "max-age=43200" in r.headers["set-cookie"].lower()  # 12 h by default
    page = c.get("/next", follow_redirects=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert c.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    stolen = _client(app)  # the old cookie, replayed: the session has ended on the server
    stolen.cookies.set(COOKIE, sid)
    assert stolen.get("/next", follow_redirects=False).headers["location"] == "/login"
    assert stolen.get("/api/next", headers={"X-CSRF-Token": csrf}).status_code == 401
    # a session past its expiry is dead too
    me = store.annotator_by_token(tokens["ann"])
    assert store.session_annotator(store.start_session(me.id, ttl_s=-1)) is None
    assert store.session_annotator(store.start_session(me.id, ttl_s=60))[0].id == me.id


def test_revoke_rotate_and_remove_take_effect_at_once(env):
    app, store, tokens = env
    browser = _client(app)
    _sign_in(browser, tokens["ann"])
    assert browser.get("/api/next").status_code == 200
    assert _client(app).get("/api/next", headers=_bearer(tokens["ann"])).status_code == 200
    assert store.revoke("ann") == 1  # one session ended
    assert browser.get("/api/next").status_code == 401
    assert browser.get("/next", follow_redirects=False).status_code == 303
    assert _client(app).get("/api/next", headers=_bearer(tokens["ann"])).status_code == 401
    new = store.rotate_token("ann")  # back in with a new token; the old one stays dead
    assert _client(app).get("/api/next", headers=_bearer(tokens["ann"])).status_code == 401
    assert _client(app).get("/api/next", headers=_bearer(new)).status_code == 200
    _sign_in(browser, new)
    assert browser.get("/api/next").status_code == 200
    newer = store.rotate_token("ann")
    assert browser.get("/api/next").status_code == 401  # rotating ends the sessions
    assert _client(app).get("/api/next", headers=_bearer(new)).status_code == 401
    # removing: access gone, unlabelled tasks go to the others, labels made are kept
    bob = store.annotator_by_token(tokens["bob"]).id
    ann = store.annotator_by_token(newer).id
    first = store.pending(ann)[0]
    store.submit(ann, JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=first, value={"choice": "A"}))
    bob_before, ann_pending = len(store.pending(bob)), len(store.pending(ann))
    assert store.remove_annotator("ann") == ann_pending
    assert _client(app).get("/api/next", headers=_bearer(newer)).status_code == 401
    assert len(store.pending(bob)) == bob_before + ann_pending
    assert [j["annotator"] for j in store.latest_judgments()] == ["ann"]


# ------------------------------------------------------------------ inputs that crashed a request

def _crashing_inputs(aid_pw, aid_rk):
    big = "9" * 5000
    huge = 99999999999999999999
    return [
        ("post", f"/task/{aid_pw}", {"data": {"choice": "A", "strength": "²"}}),
        ("post", f"/task/{aid_rk}", {"data": {"rank_0": "²", "rank_1": "1", "rank_2": "2"}}),
        ("post", f"/task/{aid_pw}", {"data": {"choice": "A", "duration_ms": big}}),
        ("post", f"/task/{aid_pw}", {"data": {"choice": "A"}, "files": {"strength": ("s.txt", b"2")}}),
        ("post", f"/task/{aid_pw}", {"data": {"strength": "1"}, "files": {"choice": ("c.txt", b"A")}}),
        ("post", f"/task/{aid_pw}", {"data": {"choice": "A"}, "files": {"duration_ms": ("d.txt", b"5")}}),
        ("post", f"/task/{aid_pw}", {"data": {"choice": "A"}, "files": {"client_id": ("d.txt", b"5")}}),
        ("post", f"/task/{aid_pw}", {"data": {"choice": "A"}, "files": {"csrf": ("d.txt", b"5")}}),
        ("post", f"/task/{huge}", {"data": {"choice": "A"}}),
        ("get", f"/task/{huge}", {}),
        ("get", f"/api/task/{huge}", {}),
        ("get", "/api/task/-1", {}),
        ("post", "/api/judgments", {"json": {"client_id": uuid.uuid4().hex, "assignment_id": huge, "value": {}}}),
        ("post", "/api/judgments", {"content": '{"client_id": "abcdefgh1", "assignment_id": 1, "value": {}, '
                                               f'"duration_ms": {big}}}'}),
        ("post", "/api/judgments", {"content": "[" * 30000 + "]" * 30000}),
        ("post", "/api/judgments", {"json": {"client_id": uuid.uuid4().hex, "assignment_id": aid_pw,
                                             "value": {"choice": "A", "strength": True}}}),
        ("post", "/api/judgments", {"json": {"client_id": uuid.uuid4().hex, "assignment_id": aid_pw,
                                             "value": {"choice": ["A"], "strength": 1.5}}}),
        ("post", "/api/judgments", {"json": {"client_id": uuid.uuid4().hex, "assignment_id": aid_rk,
                                             "value": {"ranks": [True, 1, 2]}}}),
        ("post", "/api/judgments", {"json": {"client_id": uuid.uuid4().hex, "assignment_id": aid_rk,
                                             "value": {"ranks": "123"}}}),
        ("post", "/login", {"data": {"csrf": "x"}, "files": {"token": ("t.txt", b"x")}}),
        ("post", "/logout", {"files": {"csrf": ("t.txt", b"x")}}),
        ("post", f"/task/{aid_pw}", {"content": b"\xff\xfe garbage", "headers": {"content-type": "multipart/form-data"}}),
    ]


def test_inputs_that_crashed_are_a_4xx_with_a_one_line_reason(env):
    app, store, tokens = env
    c = _client(app)
    _sign_in(c, tokens["ann"])
    page = c.get("/next", follow_redirects=True).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    aid_pw = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    aid_rk = _pending(store, tokens["ann"], "ranking")[0]["assignment_id"]
    for method, url, kw in _crashing_inputs(aid_pw, aid_rk):
        kw = dict(kw)
        headers = {"X-CSRF-Token": csrf, **kw.pop("headers", {})}
        if "data" in kw and url.startswith("/task/"):
            kw["data"] = {"csrf": csrf, "client_id": uuid.uuid4().hex, **kw["data"]}
        r = getattr(c, method)(url, headers=headers, **kw) if method == "post" else c.get(url)
        assert 400 <= r.status_code < 500, (url, kw, r.status_code, r.text[:300])
        detail = r.json()["detail"] if r.headers["content-type"].startswith("application/json") else r.text
        if isinstance(detail, str):
            assert "\n" not in detail and len(detail) < 300, detail
    assert store.count_judgments() == 0


def test_strength_true_is_refused_and_rankings_are_stored_dense(env):
    app, store, tokens = env
    c = _client(app)
    h = _bearer(tokens["ann"])
    aid_pw = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    body = {"client_id": uuid.uuid4().hex, "assignment_id": aid_pw, "value": {"choice": "A", "strength": True}}
    r = c.post("/api/judgments", json=body, headers=h)
    assert r.status_code == 422 and "strength" in r.json()["detail"]
    for n, (ranks, dense) in enumerate([([3, 3, 3], [1, 1, 1]), ([1, 3, "F"], [1, 2, "F"]), ([3, "f", 2], [2, "F", 1])]):
        aid = _pending(store, tokens["ann"], "ranking")[0]["assignment_id"] if n == 0 else aid
        body = {"client_id": uuid.uuid4().hex, "assignment_id": aid, "value": {"ranks": ranks}}
        r = c.post("/api/judgments", json=body, headers=h)
        assert r.status_code == 200 and r.json()["value"] == {"ranks": dense}
        (stored,) = [j for j in store.latest_judgments("r") if j["annotator"] == "ann"]
        assert sorted(stored["value"]["ranks"].values(), key=str) == sorted(dense, key=str)


# ------------------------------------------------------------------ blinding

def test_annotators_never_see_response_ids(env):
    app, store, tokens = env
    c = _client(app)
    h = _bearer(tokens["ann"])
    ids = set(store.responses())
    seen = []
    nxt = c.get("/api/next", headers=h).json()["assignment"]
    seen.append(nxt)
    for kind, value in [("pairwise", {"choice": "A", "strength": 2}), ("ranking", {"ranks": [2, 1, "F"]})]:
        aid = _pending(store, tokens["ann"], kind)[0]["assignment_id"]
        seen.append(c.get(f"/api/task/{aid}", headers=h).json())
        body = {"client_id": uuid.uuid4().hex, "assignment_id": aid, "value": value}
        first = c.post("/api/judgments", json=body, headers=h).json()
        retry = c.post("/api/judgments", json=body, headers=h).json()
        assert first["value"] == retry["value"] == value and retry["created"] is False  # screen terms only
        seen += [first, retry, c.get(f"/api/task/{aid}", headers=h).json()]
    seen.append(c.get("/api/judgments", headers=h).json())
    text = json.dumps(seen)
    assert "winner" not in text and "response_ids" not in text and "displayed_order" not in text
    for key in ("responses", "current", "value"):  # response lists are texts; values are letters and ranks
        for obj in re.findall(rf'"{key}": (\[[^\]]*\]|\{{[^}}]*\}})', text):
            assert not any(f'"{i}"' in obj for i in ids), obj


# ------------------------------------------------------------------ throttle, edit cap, Origin, messages

def test_sign_in_is_throttled_per_address_with_bounded_memory(env):
    app, store, tokens = env
    c = _client(app)
    codes = [_sign_in(c, f"wrong-{i}").status_code for i in range(10)]
    assert codes == [303] * 10
    r = _sign_in(c, tokens["ann"])  # the right token, after 10 failures in a minute: refused too
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text and COOKIE not in r.cookies
    assert c.get("/api/next", headers=_bearer(tokens["ann"])).status_code == 429
    # bearer tokens are throttled the same way (on a fresh app: a new throttle)
    app2 = create_app(Settings(db=store.url, bootstrap_rounds=5, sign_in_failures=3))
    c2 = _client(app2)
    assert [c2.get("/api/next", headers=_bearer(f"bad{i}")).status_code for i in range(4)] == [401, 401, 401, 429]
    t = SignInThrottle(max_failures=2, max_addresses=100)
    for i in range(5000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t) == 100


def test_edit_history_is_capped(env):
    app, store, tokens = env
    c = _client(app)
    h = _bearer(tokens["ann"])
    aid = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    codes = [c.post("/api/judgments", headers=h, json={"client_id": uuid.uuid4().hex, "assignment_id": aid,
                                                       "value": {"choice": "AB"[i % 2]}}).status_code
             for i in range(MAX_VERSIONS + 3)]
    assert codes == [200] * MAX_VERSIONS + [409] * 3
    assert store.count_judgments() == MAX_VERSIONS


def test_cross_origin_posts_are_refused(env):
    app, store, tokens = env
    c = _client(app)
    aid = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    h = _bearer(tokens["ann"])

    def post(origin):
        extra = {} if origin is None else {"Origin": origin}
        return c.post("/api/judgments", headers={**h, **extra},
                      json={"client_id": uuid.uuid4().hex, "assignment_id": aid, "value": {"choice": "A"}})

    assert post("https://evil.example").status_code == 403
    assert post("null").status_code == 403
    h = {**h, "Sec-Fetch-Site": "cross-site"}
    assert post("null").status_code == 403
    h = {**h, "Sec-Fetch-Site": "same-origin"}  # Chromium's own-page form post under Referrer-Policy: no-referrer
    assert post("null").status_code == 200
    assert post("http://testserver.evil.example").status_code == 403
    assert post("http://testserver").status_code == 200
    assert post(None).status_code == 200
    page = c.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/login", data={"token": tokens["ann"], "csrf": csrf}, headers={"Origin": "https://evil.example"},
               follow_redirects=False)
    assert r.status_code == 403


def test_sign_in_page_shows_only_fixed_messages(env):
    app, _, _ = env
    c = _client(app)
    phish = "Your account is locked: call +1-555-0100"
    assert phish not in c.get("/login", params={"error": phish}).text
    assert "Unknown token." in c.get("/login", params={"error": "unknown"}).text
    assert 'class="error"' not in c.get("/login", params={"error": "<b>x</b>"}).text


# ------------------------------------------------------------------ file modes

def test_store_and_token_files_are_owner_only(tmp_path):
    old = os.umask(0o000)  # even with a permissive umask
    try:
        db = tmp_path / "new.db"
        store = Store(str(db))
        store.migrate()
        store.add_annotator("x")
        for f in (db, tmp_path / "new.db-wal", tmp_path / "new.db-shm"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        store.close()
        tok = tmp_path / "token.txt"
        tok.write_text("old")
        tok.chmod(0o644)
        write_secret(tok, "secret\n")
        write_secret(tmp_path / "fresh.txt", "secret\n")
        assert tok.read_text() == "secret\n"
        assert {stat.S_IMODE(p.stat().st_mode) for p in (tok, tmp_path / "fresh.txt")} == {0o600}
    finally:
        os.umask(old)


# ------------------------------------------------------------------ the last holes found by attack (issue 24)

def _assert_headers(r):
    assert r.headers["x-content-type-options"] == "nosniff", (r.status_code, dict(r.headers))
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"


def _one_line_detail(r):
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 300, detail
    return detail


def _multipart(fields, charset):
    """A multipart body (and its content type) whose parts are decoded with ``charset`` by the server."""
    b = "rlhaifBoundary7"
    body = "".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items())
    return {"content": (body + f"--{b}--\r\n").encode("ascii"),
            "headers": {"content-type": f"multipart/form-data; boundary={b}; charset={charset}"}}


def test_nan_infinity_and_lone_surrogates_in_json_are_a_422_that_echoes_nothing(env):
    app, store, tokens = env
    c = _client(app)
    aid = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    h = {**_bearer(tokens["ann"]), "content-type": "application/json"}
    ok = f'"client_id": "abcdefgh12", "assignment_id": {aid}, "value": {{"choice": "A"}}'
    bodies = ['{"client_id": "abcdefgh12", "assignment_id": NaN, "value": {"choice": "A"}}',
              '{"client_id": "abcdefgh12", "assignment_id": Infinity, "value": {"choice": "A"}}',
              '{"client_id": "abcdefgh12", "assignment_id": -Infinity, "value": {"choice": "A"}}',
              '{' + ok + ', "duration_ms": NaN}',
              f'{{"client_id": "\\ud800abcdefgh", "assignment_id": {aid}, "value": {{"choice": "A"}}}}',
              '{' + ok + ', "\\udfffkey": 1}',  # an unknown field named by a lone surrogate
              '{"client_id": "abcdefgh12", "assignment_id": 1e400, "value": {"choice": "A"}}']
    for body in bodies:
        r = c.post("/api/judgments", content=body, headers=h)
        assert r.status_code == 422, (body, r.status_code, r.text[:300])
        _assert_headers(r)
        detail = _one_line_detail(r)
        assert "ud800" not in detail and "udfff" not in detail and "nan" not in detail.lower().split(), detail
    assert store.count_judgments() == 0


def test_utf7_form_posts_are_a_4xx_signed_in_or_not(env):
    app, store, tokens = env
    # "+2AA-" is a lone surrogate (U+D800) in UTF-7, which the multipart parser decodes as the part's charset
    anon = _client(app)
    anon.get("/login")
    for fields in ({"csrf": "+2AA-", "token": "x"}, {"csrf": "x", "token": "+2AA-"}):
        r = anon.post("/login", **_multipart(fields, "utf-7"), follow_redirects=False)
        assert 400 <= r.status_code < 500, (fields, r.status_code, r.text[:300])
        _assert_headers(r)
    latin1_cookie = {"Cookie": "rlhaif_login_csrf=\u00e9".encode("latin-1")}  # not ASCII either: refused, no error
    assert _client(app).post("/login", data={"csrf": "x", "token": "x"}, headers=latin1_cookie).status_code == 403
    c = _client(app)
    _sign_in(c, tokens["ann"])
    aid = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    for url, fields in ((f"/task/{aid}", {"csrf": "+2AA-", "choice": "A", "client_id": uuid.uuid4().hex}),
                        ("/logout", {"csrf": "+2AA-"})):
        r = c.post(url, **_multipart(fields, "utf-7"), follow_redirects=False)
        assert r.status_code == 403, (url, r.status_code, r.text[:300])
        _assert_headers(r)
    assert store.count_judgments() == 0 and c.get("/api/next").status_code == 200  # still signed in


def test_security_headers_are_on_server_errors_too(env):
    app, _, _ = env

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("a bug")

    r = _client(app).get("/api/boom")
    assert r.status_code == 500 and "a bug" not in r.text
    _assert_headers(r)


@pytest.mark.parametrize("field,n", [("assignment_id", None), ("duration_ms", 5)])
@pytest.mark.parametrize("sent", ["true", "false", '"{n}"', "{n}.0"])
def test_ids_and_durations_must_be_json_integers(env, field, n, sent):
    app, store, tokens = env
    aid = _pending(store, tokens["ann"], "pairwise")[0]["assignment_id"]
    fields = {"client_id": f'"{uuid.uuid4().hex}"', "assignment_id": str(aid), "value": '{"choice": "A"}',
              "duration_ms": "5", field: sent.format(n=aid if n is None else n)}
    content = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    r = _client(app).post("/api/judgments", content=content,
                          headers={**_bearer(tokens["ann"]), "content-type": "application/json"})
    assert r.status_code == 422, (content, r.status_code, r.text[:300])
    assert field in _one_line_detail(r)
    assert store.count_judgments() == 0


def test_redirects_are_relative_whatever_the_host(env):
    app, _, tokens = env
    c = _client(app)
    evil = {"Host": "evil.example"}
    answers = [c.get(p, headers=evil, follow_redirects=False)
               for p in ("/", "/next", "/next/", "/login/", "/admin/", "/my/", "/static", "/api/next/", "/task/1/",
                         "/healthz/")]
    page = c.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    for token in ("wrong", tokens["ann"]):
        answers.append(c.post("/login", data={"token": token, "csrf": csrf}, headers=evil, follow_redirects=False))
    located = [a.headers["location"] for a in answers if "location" in a.headers]
    assert len(located) >= 4  # /, /next and both sign-ins redirect
    for loc in located:
        assert loc.startswith("/") and not loc.startswith("//") and "evil" not in loc, loc


def test_display_order_is_not_predictable(tmp_path):
    """The order each annotator sees is secret: not derived from ids the API shows (it was a PRNG seeded by
    annotator and task id, so an annotator could tell which letter holds which stored response)."""
    orders, predicted = [], []
    for run in range(2):  # two stores built identically must not give the same orders
        store = Store(str(tmp_path / f"s{run}.db"))
        store.migrate()
        me = store.annotator_by_token(store.add_annotator("ann"))
        store.create_campaign("s", "pairwise")
        store.import_completions("s", [CompletionRecord(prompt_id=f"q{i}", prompt=f"p{i}", response=f"r{j} of {i}",
                                                        model=f"m{j}", index=j) for i in range(40) for j in range(2)])
        with store.read() as s:
            rows = s.execute(select(m.Assignment.task_id, m.Assignment.display_order, m.Task.response_ids)
                             .join(m.Task).where(m.Assignment.annotator_id == me.id).order_by(m.Assignment.id)).all()
        orders.append([json.loads(d) for _, d, _ in rows])
        for t, _, ids in rows:  # the old, predictable draw
            ids = json.loads(ids)
            random.Random(f"0:{me.id}:{t}").shuffle(ids)
            predicted.append(ids)
        store.close()
    assert len(orders[0]) == 40 and orders[0] != orders[1]
    assert sum(p == o for p, o in zip(predicted, orders[0] + orders[1])) < 80 - 20  # chance: about 40 of 80


def test_lookalike_annotator_names_are_refused(tmp_path):
    store = Store(str(tmp_path / "n.db"))
    store.migrate()
    store.add_annotator("alice")
    for name in ("Alice", "ALICE", "\u0430lice", "\u0391lice", "al\u0456ce", "\uff21lice"):  # Cyrillic, Greek, wide
        with pytest.raises(RlhaifError, match="looks like"):
            store.add_annotator(name)
    with pytest.raises(RlhaifError, match="'alice' already exists"):
        store.add_annotator("\uff41\uff4c\uff49\uff43\uff45")  # fullwidth "alice" is "alice"
    store.add_annotator("\uff42\uff4f\uff42")  # fullwidth "bob": stored as "bob" (NFKC)
    with pytest.raises(RlhaifError, match="looks like"):
        store.add_annotator("Bob")
    store.add_annotator("José")
    assert [a.name for a in store.annotators()] == ["alice", "bob", "José"]
    assert store.revoke("\uff42\uff4f\uff42") == 0  # the CLI's name is normalised the same way
    store.close()
