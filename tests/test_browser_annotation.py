"""The real app in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): sign in, a pairwise
task by keyboard, a ranking task by keyboard and mouse, isolation between annotators, escaping, admin page."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.human.store import Store

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img" / "annotation.png"
EVIL = "<script>window.__xss = 1</script> I am the evil answer"

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from rlhaif.feedback.human.app import Settings, create_app

    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    tokens = {"boss": store.add_annotator("boss", admin=True), "alice": store.add_annotator("alice"),
              "bob": store.add_annotator("bob")}
    store.create_campaign("pw", "pairwise", overlap=2, guidelines="## Guidelines\nPrefer the **helpful** answer.")
    store.import_completions("pw", [
        CompletionRecord(prompt_id="q1", prompt="How do I boil an egg?", response="Put it in boiling water for 8 minutes.", model="good"),
        CompletionRecord(prompt_id="q1", prompt="How do I boil an egg?", response=EVIL, model="evil", index=1)])
    store.create_campaign("rk", "ranking", overlap=2, guidelines="Rank from best (1) to worst; F for nonsense.")
    store.import_completions("rk", [CompletionRecord(prompt_id="q2", prompt="Name a prime number.", response=t,
                                                     model=m, index=i)
                                    for i, (t, m) in enumerate([("7 is prime.", "good"), ("Maybe 9?", "meh"),
                                                                ("banana banana", "evil")])])
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    p = port.getsockname()[1]
    port.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(Settings(db=db, bootstrap_rounds=20)), host="127.0.0.1", port=p,
                                        log_level="error"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{p}", tokens, store
    srv.should_exit = True
    th.join(timeout=10)
    store.close()


def _login(page, url, token):
    page.goto(url + "/login")
    page.fill("#token", token)
    page.click("#signin")


def test_annotate_in_chromium(server, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: run scripts/install-dev.sh (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    url, tokens, store = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)  # fresh temporary profile
        alice = browser.new_context().new_page()
        _login(alice, url, tokens["alice"])
        alice.wait_for_selector("#choose-A")
        # model output is shown as text, never run
        texts = alice.locator(".response .text").all_inner_texts()
        assert any("<script>window.__xss = 1</script>" in t for t in texts)
        assert alice.evaluate("window.__xss") is None
        assert "Prefer the" in alice.inner_text(".guidelines") and "good" not in alice.inner_text(".responses")
        shown_a = alice.inner_text("#resp-A .text")
        pairwise_aid = int(alice.url.rsplit("/", 1)[1])
        alice.keyboard.press("1")  # keyboard: A is better
        alice.wait_for_selector("#submit")  # the ranking task
        assert alice.get_attribute("#progress", "value") == "1"
        alice.keyboard.press("2")  # keyboard: ranks typed in display order (A=2, B=1, ...)
        alice.keyboard.press("1")
        alice.select_option("#rank-C", "F")  # mouse: C is nonsense
        alice.screenshot(path=str(tmp_path / "annotation.png"), full_page=True)
        shown = alice.locator(".response .text").all_inner_texts()
        alice.click("#submit")  # mouse
        alice.wait_for_selector("#done")
        assert "2 of 2" in alice.inner_text("#done")

        # the stored labels are what alice chose, mapped from her screen order to responses
        labels = {j["kind"]: j for j in store.latest_judgments() if j["annotator"] == "alice"}
        resp = store.responses()
        assert resp[labels["pairwise"]["value"]["winner"]]["text"] == shown_a
        ranks = labels["ranking"]["value"]["ranks"]
        by_text = {resp[int(rid)]["text"]: r for rid, r in ranks.items()}
        assert [by_text[t] for t in shown] == [2, 1, "F"]

        # bob cannot read alice's labels or her assignment
        bob = browser.new_context().new_page()
        _login(bob, url, tokens["bob"])
        bob.wait_for_selector("#task-form")
        r = bob.goto(f"{url}/task/{pairwise_aid}")
        assert r.status == 404
        bob.goto(url + "/my")
        assert bob.locator("#my-labels tr").count() == 1  # header only
        assert bob.goto(url + "/admin").status == 403

        # the admin sees the labels and the leaderboard with its chart
        boss = browser.new_context().new_page()
        _login(boss, url, tokens["boss"])
        boss.wait_for_selector("#leaderboard-models")
        assert "alice" in boss.inner_text("#labels")
        board = boss.inner_text("#leaderboard-models")
        assert "good" in board and "evil" in board
        assert boss.locator("#ci-chart circle").count() >= 2
        boss.screenshot(path=str(tmp_path / "admin.png"), full_page=True)
        browser.close()
    assert (tmp_path / "annotation.png").stat().st_size > 5000
    DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "annotation.png", DOCS_IMG)
