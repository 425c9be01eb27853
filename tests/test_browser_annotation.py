"""The real app in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): sign in, a pairwise
task by keyboard (alice) and by mouse (bob), a ranking task by keyboard and mouse, isolation between
annotators, escaping, guidelines, progress bar, the admin page (labels, agreement, reliability, leaderboard
with its chart). Screenshots of the task and admin pages are copied to docs/img/."""

import os
import shutil
from pathlib import Path

import pytest

from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.human.store import Store

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
EVIL = "<script>window.__xss = 1</script> I am the evil answer"
GOOD = "Put it in boiling water for 8 minutes."
RANKS = {"7 is prime.": 1, "Maybe 9?": 2, "banana banana": "F"}  # the ranking alice gives

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path, live_server):
    from rlhaif.feedback.human.app import Settings, create_app

    db = str(tmp_path / "f.db")
    store = Store(db, display_order_seed=0)  # the same orders on every run: docs/img's screenshots stay the same
    store.migrate()
    tokens = {"boss": store.add_annotator("boss", admin=True), "alice": store.add_annotator("alice"),
              "bob": store.add_annotator("bob")}
    store.create_campaign("pw", "pairwise", overlap=2,
                          guidelines="Prefer the **helpful** answer.\n\n- Judge the content, not the style.")
    store.import_completions("pw", [
        CompletionRecord(prompt_id="q1", prompt="How do I boil an egg?", response=GOOD, model="good"),
        CompletionRecord(prompt_id="q1", prompt="How do I boil an egg?", response=EVIL, model="evil", index=1)])
    store.create_campaign("rk", "ranking", overlap=2, guidelines="Rank from best (1) to worst; F for nonsense.")
    store.import_completions("rk", [CompletionRecord(prompt_id="q2", prompt="Name a prime number.", response=t,
                                                     model=m, index=i)
                                    for i, (t, m) in enumerate([("7 is prime.", "good"), ("Maybe 9?", "meh"),
                                                                ("banana banana", "evil")])])
    url = live_server(create_app(Settings(db=db, bootstrap_rounds=20, cost_per_hour=36.0)))
    yield url, tokens, store
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
        alice.screenshot(path=str(tmp_path / "pairwise.png"), full_page=True)
        alice.keyboard.press("1" if shown_a == GOOD else "2")  # keyboard: the good answer is better
        alice.wait_for_selector("#submit")  # the ranking task
        assert alice.get_attribute("#progress", "value") == "1"
        shown = alice.locator(".response .text").all_inner_texts()
        for text in shown[:2]:  # keyboard: ranks typed in display order (1-9, f = nonsense)
            alice.keyboard.press(str(RANKS[text]).lower())
        alice.select_option("#rank-C", str(RANKS[shown[2]]))  # mouse: the third by its drop-down
        alice.screenshot(path=str(tmp_path / "annotation.png"), full_page=True)
        alice.click("#submit")  # mouse
        alice.wait_for_selector("#done")
        assert "2 of 2" in alice.inner_text("#done")

        # the stored labels are what alice chose, mapped from her screen order to responses
        labels = {j["kind"]: j for j in store.latest_judgments() if j["annotator"] == "alice"}
        resp = store.responses()
        assert resp[labels["pairwise"]["value"]["winner"]]["text"] == GOOD
        ranks = labels["ranking"]["value"]["ranks"]
        assert {resp[int(rid)]["text"]: r for rid, r in ranks.items()} == RANKS

        # bob labels the pairwise task by mouse, and cannot read alice's labels or her assignment
        bob = browser.new_context().new_page()
        _login(bob, url, tokens["bob"])
        bob.wait_for_selector("#choose-B")
        bob_aid = int(bob.url.rsplit("/", 1)[1])
        assert bob_aid != pairwise_aid
        bob.click("#choose-A" if bob.inner_text("#resp-A .text") == GOOD else "#choose-B")  # mouse
        bob.wait_for_selector("#submit")
        r = bob.goto(f"{url}/task/{pairwise_aid}")
        assert r.status == 404 and shown_a not in bob.content()
        bob.goto(url + "/my")
        assert bob.locator("#my-labels tr").count() == 2  # header + bob's own label, none of alice's
        assert bob.goto(url + "/admin").status == 403
        bob_label = [j for j in store.latest_judgments() if j["annotator"] == "bob"]
        assert len(bob_label) == 1 and resp[bob_label[0]["value"]["winner"]]["text"] == GOOD

        # the admin sees the labels and the leaderboard with its chart
        boss = browser.new_context().new_page()
        _login(boss, url, tokens["boss"])
        boss.wait_for_selector("#leaderboard-models")
        assert "alice" in boss.inner_text("#labels") and "bob" in boss.inner_text("#labels")
        assert "pairwise agreement" in boss.inner_text("#agreement")
        assert "alice" in boss.inner_text("#reliability") and "bob" in boss.inner_text("#reliability")
        board = boss.inner_text("#leaderboard-models")
        assert "good" in board and "evil" in board
        assert boss.locator("#ci-chart circle").count() >= 2
        # what the labels cost: both pairwise labels are usable (no tie, nobody flagged); at 36 an hour
        costs = {tuple(c.strip() for c in row.split("\t")[:2]): row.split("\t")
                 for row in boss.inner_text("#costs").splitlines()[1:]}
        pw_all = costs[("pw", "all")]
        assert pw_all[2:3] == ["2"] and pw_all[4:6] == ["2", "1.0"]
        durations = [j["duration_ms"] / 1000 for j in store.latest_judgments("pw")]
        assert float(pw_all[6]) == pytest.approx(36.0 * sum(durations) / 3600, abs=1e-3)
        assert float(pw_all[7]) == pytest.approx(float(pw_all[6]) / 2, abs=1e-3)
        assert ("rk", "alice") in costs and ("pw", "bob") in costs
        boss.screenshot(path=str(tmp_path / "admin.png"), full_page=True)
        browser.close()
    # the screenshots are kept where a reviewer sees them: docs/img/, shown in docs/feedback.md
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    for name in ("pairwise.png", "annotation.png", "admin.png"):
        assert (tmp_path / name).stat().st_size > 5000
        shutil.copy(tmp_path / name, DOCS_IMG / name)


def test_guidelines_link_is_not_script_and_csp_is_sent(tmp_path, live_server):
    """A ``javascript:`` link in the guidelines reaches the page without its target (clicking it runs
    nothing), and the task page carries the Content-Security-Policy header."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: run scripts/install-dev.sh (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    from rlhaif.feedback.human.app import Settings, create_app

    db = str(tmp_path / "x.db")
    store = Store(db)
    store.migrate()
    token = store.add_annotator("carol")
    store.create_campaign("x", "pairwise", guidelines="Read [the rules](javascript:window.__pwned=1) first; "
                                                      "[help](https://example.org/help).")
    store.import_completions("x", [CompletionRecord(prompt_id="q", prompt="Hi?", response=t, model=t, index=i)
                                   for i, t in enumerate(("hello", "hey"))])
    url = live_server(create_app(Settings(db=db)))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_context().new_page()
        answers = []
        page.on("response", lambda r: answers.append(r) if "/task/" in r.url else None)
        _login(page, url, token)
        page.wait_for_selector("#choose-A")
        csp = answers[-1].headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        link = page.locator(".guidelines a", has_text="the rules")
        assert link.count() == 1 and link.get_attribute("href") is None
        assert page.locator(".guidelines a", has_text="help").get_attribute("href") == "https://example.org/help"
        link.click()
        assert page.evaluate("window.__pwned") is None
        assert "/task/" in page.url  # the click went nowhere
        # and the policy is in force: an inline script added to the page does not run
        page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
                                 document.body.appendChild(s); }""")
        assert page.evaluate("window.__inline") is None
        browser.close()
    store.close()
