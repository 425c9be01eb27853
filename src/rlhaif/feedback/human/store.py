"""Every query of the feedback store. Routes, the CLI and the simulated panel call these; nothing else
touches the database.

Rules kept here: a judgment is never overwritten (an edit is a new version); a submission with a known
``client_id`` returns the stored judgment instead of adding one; every write commits before returning, so
whatever the caller acknowledges is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import random
import secrets
import threading
import unicodedata
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rlhaif.data.records import CompletionRecord, PairRecord, prompt_text
from rlhaif.errors import RlhaifError
from rlhaif.feedback.human import models as m
from rlhaif.feedback.human.db import make_engine, normalize_url
from rlhaif.feedback.human.schemas import (KINDS, MAX_TEXT, MAX_VERSIONS, JudgmentIn, JudgmentOut, to_canonical,
                                           to_display)

MIGRATIONS = Path(__file__).parent / "migrations"
SHUFFLE = secrets.SystemRandom()  # display orders: unpredictable, or the blinding could be undone from ids
LOOKALIKE_SCRIPTS = {"LATIN", "CYRILLIC", "GREEK"}  # alphabets sharing letter shapes (a, а, α; o, о, ο; ...)


class NotFound(RlhaifError):
    """No such object for this annotator (another annotator's assignment reads as missing)."""


class Conflict(RlhaifError):
    """A client id already used by another annotator or assignment."""


def _messages(p: m.Prompt) -> list[dict[str, Any]]:
    """A stored prompt (JSON: text or messages) as the messages shown above the responses."""
    prompt = json.loads(p.prompt)
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _suggestion(label: m.AILabel, canonical: list[int], shown: list[int]) -> dict[str, Any]:
    """The AI label in the annotator's screen terms: which letter the judge prefers, and how sure it is."""
    favored = canonical[0] if label.p >= 0.5 else canonical[1]
    return {"letter": "AB"[shown.index(favored)], "p": round(max(label.p, 1.0 - label.p), 3),
            "model": label.model, "principle": label.principle}


def _response_texts(s: Session, campaign_id: int) -> dict[int, str]:
    """{response id: text} of every response of a campaign."""
    return dict(s.execute(select(m.Response.id, m.Response.text).join(m.Prompt)
                          .where(m.Prompt.campaign_id == campaign_id)).all())


def annotator_name(name: str) -> str:
    """A new annotator's name as stored: NFKC-normalised (fullwidth "ａｌｉｃｅ" is "alice"), 1-100 letters,
    digits, '-', '_' or '.', with letters of one alphabet among Latin, Cyrillic and Greek ("аlice" with a
    Cyrillic "а" is refused: it looks like "alice")."""
    name = unicodedata.normalize("NFKC", name or "")
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise RlhaifError(f"annotator name {name!r}: use 1-100 letters, digits, '-', '_' or '.'")
    scripts = {unicodedata.name(c, "").split(" ")[0] for c in name if c.isalpha()} & LOOKALIKE_SCRIPTS
    if len(scripts) > 1:
        mixed = " and ".join(x.title() for x in sorted(scripts))
        raise RlhaifError(f"annotator name {name!r} mixes {mixed} letters, so it looks like a name written in one "
                          "of them: use one alphabet")
    return name


def name_key(name: str) -> str:
    """What lookalike names share: NFKC-normalised and case-folded ("Alice", "ALICE", "ａｌｉｃｅ": "alice")."""
    return unicodedata.normalize("NFKC", name).casefold()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def write_secret(path: str | Path, text: str) -> None:
    """Write a token file readable by its owner only (created 0600: never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _dead_hash() -> str:
    """A token hash no token has (SHA-256 is hex; this is not): the old token stops working."""
    return "revoked:" + secrets.token_hex(16)


_RETRY = object()  # a submission that met a concurrent one with its client id or version: look again


class _Pending:
    __slots__ = ("annotator_id", "j", "done", "result")

    def __init__(self, annotator_id: int, j: JudgmentIn):
        self.annotator_id, self.j, self.done, self.result = annotator_id, j, threading.Event(), None


class GroupCommit:
    """SQLite's judgment writer: one thread takes every submission waiting, stores them in one transaction
    (each in its own savepoint, so a bad one fails alone) and commits once: one fsync acknowledges the
    whole batch. Nobody is answered before the commit returns. SQLite has one writer at a time anyway;
    this turns the fsync per judgment (about 10 ms on this machine's disk) into one per batch."""

    def __init__(self, store: "Store", max_batch: int = 64):
        self.store, self.max_batch = store, max_batch
        self.q: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="rlhaif-group-commit", daemon=True)
        self.thread.start()

    def submit(self, annotator_id: int, j: JudgmentIn):
        item = _Pending(annotator_id, j)
        self.q.put(item)
        item.done.wait()
        if isinstance(item.result, Exception):
            raise item.result
        return item.result

    def stop(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            items = [self.q.get()]
            while items[-1] is not None and len(items) < self.max_batch:
                try:
                    items.append(self.q.get_nowait())
                except queue.Empty:
                    break
            stop = items[-1] is None
            self._commit([it for it in items if it is not None])
            if stop:
                return

    def _commit(self, items: list[_Pending]) -> None:
        if not items:
            return
        try:
            with self.store.write() as s:
                for it in items:
                    try:
                        with s.begin_nested():
                            it.result = self.store._insert(s, it.annotator_id, it.j)
                    except IntegrityError:
                        it.result = _RETRY
                    except (RlhaifError, ValueError) as e:  # not yours, a bad value, the edit limit
                        it.result = e
        except Exception as e:  # noqa: BLE001 - the commit failed: no one in the batch is acknowledged
            for it in items:
                it.result = e
        finally:
            for it in items:
                it.done.set()


class Store:
    """The feedback store at ``url`` (a SQLite file path or a database URL). Display orders are drawn from a
    secure source; ``display_order_seed`` draws them from a PRNG seeded by it, the annotator and the task
    instead, for a store that only simulated annotators label (their labels then follow the seed alone):
    such orders can be worked out from ids, so never for a store people label."""

    def __init__(self, url: str, display_order_seed: int | None = None):
        self.url = normalize_url(url)
        self.display_order_seed = display_order_seed
        self.engine = make_engine(self.url)
        self.write_engine = make_engine(self.url, immediate=True) if self.url.startswith("sqlite") else self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._wlock = threading.Lock() if self.url.startswith("sqlite") else contextlib.nullcontext()
        self._group: GroupCommit | None = None  # started by the first submission on SQLite
        self._group_lock = threading.Lock()

    # ------------------------------------------------------------ schema

    def migrate(self, revision: str = "head") -> None:
        """Create or upgrade the schema with the Alembic migrations (labels already stored are kept)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_ready(self) -> None:
        if self.revision() is None:
            raise RlhaifError(f"{self.url}: not a feedback store yet; run `rlhaif feedback init --db ...` first")

    def close(self) -> None:
        if self._group is not None:
            self._group.stop()
            self._group = None
        self.engine.dispose()
        self.write_engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Session]:
        # SQLite has one writer at a time: queue this process's writers on a lock rather than on SQLite's
        # busy handler, which sleeps in growing steps (a p95 of seconds under 50 concurrent annotators).
        with self._wlock, self._write() as s, s.begin():
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    # ------------------------------------------------------------ annotators

    def add_annotator(self, name: str, admin: bool = False, token: str | None = None) -> str:
        """Create an annotator; returns the personal sign-in token (only its hash is stored). A name that looks
        like an existing one (``annotator_name``, ``name_key``) is refused."""
        name = annotator_name(name)
        token = token or secrets.token_urlsafe(24)
        try:
            with self.write() as s:
                for other in s.scalars(select(m.Annotator.name)):
                    if other == name:
                        raise RlhaifError(f"annotator {name!r} already exists")
                    if name_key(other) == name_key(name):
                        raise RlhaifError(f"annotator name {name!r} looks like {other!r}, who exists already: choose "
                                          "a name that differs in more than case or character width")
                s.add(m.Annotator(name=name, token_hash=hash_token(token), is_admin=admin))
        except IntegrityError:
            raise RlhaifError(f"annotator {name!r} already exists") from None
        self.assign()
        return token

    def annotator_by_token(self, token: str) -> m.Annotator | None:
        """The active annotator with this token (a revoked, rotated or removed one's old token is None)."""
        if not token or len(token) > 200:
            return None
        with self.read() as s:
            return s.scalar(select(m.Annotator).where(m.Annotator.token_hash == hash_token(token),
                                                      m.Annotator.status == "active"))

    def _annotator_named(self, s: Session, name: str) -> m.Annotator:
        a = s.scalar(select(m.Annotator).where(m.Annotator.name == unicodedata.normalize("NFKC", name)))
        if a is None:
            raise RlhaifError(f"no annotator named {name!r} in {self.url}")
        return a

    def revoke(self, name: str) -> int:
        """Revoke an annotator's access: the token stops working and every session ends at once (their labels
        and tasks stay; ``rotate_token`` gives them a new token). Returns the number of sessions ended."""
        with self.write() as s:
            a = self._annotator_named(s, name)
            a.token_hash, a.status = _dead_hash(), ("removed" if a.status == "removed" else "revoked")
            return s.execute(delete(m.SignInSession).where(m.SignInSession.annotator_id == a.id)).rowcount

    def rotate_token(self, name: str) -> str:
        """A new token for an annotator (the old one and every session end at once); returns the new token."""
        token = secrets.token_urlsafe(24)
        with self.write() as s:
            a = self._annotator_named(s, name)
            if a.status == "removed":
                raise RlhaifError(f"annotator {name!r} was removed: add a new annotator instead")
            a.token_hash, a.status = hash_token(token), "active"
            s.execute(delete(m.SignInSession).where(m.SignInSession.annotator_id == a.id))
        return token

    def remove_annotator(self, name: str) -> int:
        """Remove an annotator: access revoked, their unlabelled tasks given to others (labels already made
        are kept, under their name). Returns the number of tasks released."""
        self.revoke(name)
        with self.write() as s:
            a = self._annotator_named(s, name)
            a.status = "removed"
            released = s.execute(delete(m.Assignment).where(m.Assignment.annotator_id == a.id,
                                                            m.Assignment.status == "pending")).rowcount
        self.assign()
        return released

    # ------------------------------------------------------------ sign-in sessions

    def start_session(self, annotator_id: int, ttl_s: float) -> str:
        """A new session for a signed-in browser; returns its id (for the cookie; only its hash is stored).
        Expired sessions are deleted on the way."""
        sid = secrets.token_urlsafe(32)
        t = m.now()
        with self.write() as s:
            s.execute(delete(m.SignInSession).where(m.SignInSession.expires_at <= t))
            s.add(m.SignInSession(id_hash=hash_token(sid), annotator_id=annotator_id, created_at=t,
                                  expires_at=t + timedelta(seconds=ttl_s)))
        return sid

    def session_annotator(self, session_id: str) -> tuple[m.Annotator, str] | None:
        """(annotator, session hash) of a live session of an active annotator, else None."""
        if not session_id or len(session_id) > 200:
            return None
        h = hash_token(session_id)
        with self.read() as s:
            a = s.scalar(select(m.Annotator).join(m.SignInSession, m.SignInSession.annotator_id == m.Annotator.id)
                         .where(m.SignInSession.id_hash == h, m.SignInSession.expires_at > m.now(),
                                m.Annotator.status == "active"))
        return (a, h) if a is not None else None

    def end_session(self, session_id: str) -> None:
        with self.write() as s:
            s.execute(delete(m.SignInSession).where(m.SignInSession.id_hash == hash_token(session_id)))

    def annotators(self) -> list[m.Annotator]:
        with self.read() as s:
            return list(s.scalars(select(m.Annotator).order_by(m.Annotator.id)))

    # ------------------------------------------------------------ campaigns and tasks

    def create_campaign(self, name: str, kind: str, overlap: int = 1, guidelines: str = "") -> int:
        if kind not in KINDS:
            raise RlhaifError(f"task kind {kind!r}: choose one of {', '.join(KINDS)}")
        if overlap < 1:
            raise RlhaifError("overlap (annotators per item) must be >= 1")
        with self.write() as s:
            c = s.scalar(select(m.Campaign).where(m.Campaign.name == name))
            if c is not None:
                if c.kind != kind:
                    raise RlhaifError(f"campaign {name!r} exists with task kind {c.kind!r}, not {kind!r}")
                if guidelines and guidelines != c.guidelines:  # new guidelines: a new version, judgments keep theirs
                    c.guidelines, c.guideline_version = guidelines, c.guideline_version + 1
                return c.id
            c = m.Campaign(name=name, kind=kind, overlap=overlap, guidelines=guidelines, guideline_version=1)
            s.add(c)
            s.flush()
            return c.id

    def campaigns(self) -> list[m.Campaign]:
        with self.read() as s:
            return list(s.scalars(select(m.Campaign).order_by(m.Campaign.id)))

    def campaign(self, name: str) -> m.Campaign:
        with self.read() as s:
            c = s.scalar(select(m.Campaign).where(m.Campaign.name == name))
        if c is None:
            raise RlhaifError(f"no campaign named {name!r} in {self.url}")
        return c

    def import_completions(self, campaign: str, records: Iterable[CompletionRecord], path: str = "<input>",
                           responses_per_task: int = 4) -> int:
        """Group completions by prompt and make tasks: pairwise/aspects: consecutive pairs (K-1 per prompt,
        which connects all K); ranking: one task of up to ``responses_per_task``; rating/thumbs: one per response."""
        c = self.campaign(campaign)
        by_prompt: dict[str, list[CompletionRecord]] = {}
        for n, r in enumerate(records, start=1):
            for field, text in (("response", r.response), ("prompt", prompt_text(r.prompt))):
                if len(text) > MAX_TEXT:
                    raise RlhaifError(f"{path}:{n}: field '{field}': longer than {MAX_TEXT} characters")
            by_prompt.setdefault(r.prompt_id, []).append(r)
        made = 0
        with self.write() as s:
            for pid, recs in by_prompt.items():
                if s.scalar(select(m.Prompt.id).where(m.Prompt.campaign_id == c.id, m.Prompt.external_id == pid)):
                    continue  # imported before: importing twice adds nothing
                p = m.Prompt(campaign_id=c.id, external_id=pid,
                             prompt=json.dumps(recs[0].model_dump(mode="json")["prompt"]))
                s.add(p)
                s.flush()
                resp = []
                for r in recs:
                    x = m.Response(prompt_id=p.id, text=r.response, model=r.model, idx=r.index)
                    s.add(x)
                    resp.append(x)
                s.flush()
                ids = [x.id for x in resp]
                if c.kind in ("pairwise", "aspects"):
                    groups = [[a, b] for a, b in zip(ids, ids[1:])]
                elif c.kind == "ranking":
                    groups = [ids[i:i + responses_per_task] for i in range(0, len(ids), responses_per_task)]
                    groups = [g for g in groups if len(g) >= 2]
                else:
                    groups = [[i] for i in ids]
                for g in groups:
                    s.add(m.Task(campaign_id=c.id, prompt_id=p.id, kind=c.kind, response_ids=json.dumps(g)))
                    made += 1
        self.assign()
        return made

    def asked_pairs(self, campaign: str) -> set[tuple[str, str, str]]:
        """(prompt id, first text, second text) of every pairwise task the campaign already has, so a budgeted
        import buys only comparisons not yet asked. A campaign not yet created has asked none."""
        with self.read() as s:
            if s.scalar(select(m.Campaign.id).where(m.Campaign.name == campaign)) is None:
                return set()
        c = self._pairwise_campaign(campaign, "a selection imports into")
        with self.read() as s:
            rows = s.execute(select(m.Task, m.Prompt.external_id).join(m.Prompt, m.Prompt.id == m.Task.prompt_id)
                             .where(m.Task.campaign_id == c.id)).all()
            text = _response_texts(s, c.id)
        out = set()
        for t, pid in rows:
            a, b = json.loads(t.response_ids)
            out.add((pid, text[a], text[b]))
        return out

    def import_selected(self, campaign: str, selected: Iterable[Any], path: str = "<input>") -> int:
        """One pairwise task per selected comparison (``rlhaif.feedback.select.Selected``), with its selection
        record (rule, score, rank) stored on the task; prompts and responses are added once. All in one
        transaction: a failure leaves the campaign as it was."""
        c = self._pairwise_campaign(campaign, "a selection imports into")
        made = 0
        with self.write() as s:
            for n, sel in enumerate(selected, start=1):
                cand = sel.candidate
                for field, txt in (("response", cand.first_text), ("response", cand.second_text),
                                   ("prompt", prompt_text(cand.prompt))):
                    if len(txt) > MAX_TEXT:
                        raise RlhaifError(f"{path}: prompt {cand.prompt_id!r}: field '{field}': longer than "
                                          f"{MAX_TEXT} characters")
                p = s.scalar(select(m.Prompt).where(m.Prompt.campaign_id == c.id,
                                                    m.Prompt.external_id == cand.prompt_id))
                if p is None:
                    messages = isinstance(cand.prompt, list)  # chat messages (pydantic) or text
                    value = [x.model_dump(mode="json") for x in cand.prompt] if messages else cand.prompt
                    p = m.Prompt(campaign_id=c.id, external_id=cand.prompt_id, prompt=json.dumps(value))
                    s.add(p)
                    s.flush()
                ids = []
                for idx, txt in ((cand.first, cand.first_text), (cand.second, cand.second_text)):
                    r = s.scalar(select(m.Response).where(m.Response.prompt_id == p.id, m.Response.idx == idx,
                                                          m.Response.text == txt))
                    if r is None:
                        r = m.Response(prompt_id=p.id, text=txt, model="", idx=idx)
                        s.add(r)
                        s.flush()
                    ids.append(r.id)
                s.add(m.Task(campaign_id=c.id, prompt_id=p.id, kind=c.kind, response_ids=json.dumps(ids),
                             selection=json.dumps(sel.record())))
                made += 1
        self.assign()
        return made

    def set_gold(self, task_id: int, value: dict[str, Any]) -> None:
        """Mark a task as a gold item with its known answer (canonical value: response ids)."""
        with self.write() as s:
            t = s.get(m.Task, task_id)
            if t is None:
                raise NotFound(f"no task {task_id}")
            t.gold = json.dumps(value)

    def set_gold_pairs(self, campaign: str, pairs: Iterable[PairRecord], path: str = "<input>") -> int:
        """Gold items from known preferences: a pair whose chosen and rejected are the two responses of a
        pairwise task (shown in either order) gives that task the known answer: chosen wins (p > 0.5),
        rejected wins (p < 0.5) or a tie (p = 0.5). All or nothing: a pair matching no task stops with its line."""
        c = self._pairwise_campaign(campaign, "gold pairs mark")
        made = 0
        with self.write() as s:
            tasks = list(s.scalars(select(m.Task).where(m.Task.campaign_id == c.id)))
            text = _response_texts(s, c.id)
            by_texts: dict[frozenset, list[tuple[m.Task, int, int]]] = {}
            for t in tasks:
                a, b = json.loads(t.response_ids)
                by_texts.setdefault(frozenset((text[a], text[b])), []).append((t, a, b))
            for n, pair in enumerate(pairs, start=1):
                found = by_texts.get(frozenset((pair.chosen, pair.rejected)), [])
                if not found:
                    raise RlhaifError(f"{path}:{n}: fields 'chosen'/'rejected': no pairwise task of campaign "
                                      f"{campaign!r} shows these two responses")
                for t, a, b in found:
                    chosen, rejected = (a, b) if text[a] == pair.chosen else (b, a)
                    value = ({"choice": "tie", "winner": None, "strength": None} if pair.p == 0.5 else
                             {"choice": "win", "winner": chosen if pair.p > 0.5 else rejected, "strength": None})
                    t.gold = json.dumps(value)
                    made += 1
        return made

    def _pairwise_campaign(self, campaign: str, what: str) -> m.Campaign:
        c = self.campaign(campaign)
        if c.kind != "pairwise":
            raise RlhaifError(f"campaign {campaign!r} is {c.kind}: {what} pairwise tasks only")
        return c

    def assign(self) -> int:
        """Give every task to ``overlap`` distinct annotators (admins excluded), least-loaded first, each with
        its own display order (shuffled, see the class) and stored. Returns the number of new assignments."""
        made = 0
        with self.write() as s:
            people = list(s.scalars(select(m.Annotator.id).where(m.Annotator.is_admin.is_(False),
                                                                 m.Annotator.status == "active").order_by(m.Annotator.id)))
            if not people:
                return 0
            load = dict.fromkeys(people, 0)
            for a, n in s.execute(select(m.Assignment.annotator_id, func.count()).group_by(m.Assignment.annotator_id)):
                if a in load:
                    load[a] = n
            have: dict[int, set[int]] = {}
            for t, a in s.execute(select(m.Assignment.task_id, m.Assignment.annotator_id)):
                have.setdefault(t, set()).add(a)
            for t in s.scalars(select(m.Task).join(m.Campaign).order_by(m.Task.id)):
                overlap = s.get(m.Campaign, t.campaign_id).overlap
                got = have.get(t.id, set())
                for a in sorted((p for p in people if p not in got), key=lambda p: (load[p], p))[:max(0, overlap - len(got))]:
                    order = json.loads(t.response_ids)
                    (SHUFFLE if self.display_order_seed is None
                     else random.Random(f"{self.display_order_seed}:{a}:{t.id}")).shuffle(order)
                    s.add(m.Assignment(task_id=t.id, annotator_id=a, display_order=json.dumps(order), status="pending"))
                    load[a] += 1
                    made += 1
        return made

    # ------------------------------------------------------------ annotating

    @staticmethod
    def _pending_ids(annotator_id: int):
        return (select(m.Assignment.id).where(m.Assignment.annotator_id == annotator_id, m.Assignment.status == "pending")
                .order_by(m.Assignment.id))

    def next_assignment(self, annotator_id: int) -> int | None:
        with self.read() as s:
            return s.scalar(self._pending_ids(annotator_id).limit(1))

    def progress_of(self, annotator_id: int) -> tuple[int, int]:
        with self.read() as s:
            total = s.scalar(select(func.count()).select_from(m.Assignment).where(m.Assignment.annotator_id == annotator_id))
            done = s.scalar(select(func.count()).select_from(m.Assignment).where(
                m.Assignment.annotator_id == annotator_id, m.Assignment.status == "done"))
        return int(done or 0), int(total or 0)

    def task_view(self, assignment_id: int, annotator_id: int) -> dict[str, Any]:
        """What the annotator sees: prompt, responses in their order (text only: the model stays hidden),
        guidelines, and their latest judgment in screen terms (to edit it)."""
        with self.read() as s:
            found = s.execute(select(m.Assignment, m.Task, m.Campaign, m.Prompt)
                              .join(m.Task, m.Task.id == m.Assignment.task_id)
                              .join(m.Campaign, m.Campaign.id == m.Task.campaign_id)
                              .join(m.Prompt, m.Prompt.id == m.Task.prompt_id)
                              .where(m.Assignment.id == assignment_id, m.Assignment.annotator_id == annotator_id)).first()
            if found is None:
                raise NotFound(f"no assignment {assignment_id} for you")
            a, t, c, p = found
            shown = json.loads(a.display_order)
            texts = dict(s.execute(select(m.Response.id, m.Response.text).where(m.Response.id.in_(shown))).all())
            last = (s.scalar(select(m.Judgment).where(m.Judgment.assignment_id == a.id)
                             .order_by(m.Judgment.version.desc()).limit(1))
                    if a.status != "pending" else None)  # a pending assignment has no judgment yet
            ai = (s.scalar(select(m.AILabel).where(m.AILabel.task_id == t.id).order_by(m.AILabel.id.desc()).limit(1))
                  if c.show_ai_suggestions and t.kind == "pairwise" else None)
        return {"assignment_id": a.id, "kind": t.kind, "campaign": c.name, "guidelines": c.guidelines,
                "guideline_version": c.guideline_version, "messages": _messages(p),
                "responses": [texts[r] for r in shown],
                "current": to_display(t.kind, json.loads(last.value), shown) if last else None,
                "version": last.version if last else 0,
                "suggestion": _suggestion(ai, json.loads(t.response_ids), shown) if ai else None}

    def submit(self, annotator_id: int, j: JudgmentIn) -> JudgmentOut:
        """Store one judgment (a new version of the assignment's label) unless its client_id is known."""
        for _ in range(10):
            done = self._stored(annotator_id, j)
            if done is not None:
                return done
            if self.url.startswith("sqlite"):
                out = self._group_commit().submit(annotator_id, j)
                if out is not _RETRY:
                    return out  # committed with its batch: the acknowledgement follows the commit
                continue
            try:
                with self.write() as s:
                    out = self._insert(s, annotator_id, j)
                return out  # committed: the acknowledgement follows the commit
            except IntegrityError:
                continue  # a concurrent retry of the same client_id, or a concurrent edit took this version
        raise Conflict("could not store the judgment after 10 attempts (too much contention)")

    def _group_commit(self) -> GroupCommit:
        with self._group_lock:
            if self._group is None:
                self._group = GroupCommit(self)
            return self._group

    def submit_many(self, annotator_id: int, items: list[JudgmentIn]) -> int:
        """Store new judgments in one transaction (batch jobs: the simulated panel, AI labels)."""
        with self.write() as s:
            for j in items:
                self._insert(s, annotator_id, j)
        return len(items)

    def pending(self, annotator_id: int) -> list[int]:
        with self.read() as s:
            return list(s.scalars(self._pending_ids(annotator_id)))

    def pending_views(self, annotator_id: int) -> list[dict[str, Any]]:
        """All pending assignments of one annotator as (id, kind, messages, responses in their order), in three
        queries: for batch labelers (the simulated panel) that would otherwise call ``task_view`` per task."""
        with self.read() as s:
            rows = s.execute(select(m.Assignment, m.Task, m.Prompt).join(m.Task, m.Task.id == m.Assignment.task_id)
                             .join(m.Prompt, m.Prompt.id == m.Task.prompt_id)
                             .where(m.Assignment.annotator_id == annotator_id, m.Assignment.status == "pending")
                             .order_by(m.Assignment.id)).all()
            ids = {r for a, _, _ in rows for r in json.loads(a.display_order)}
            texts = dict(s.execute(select(m.Response.id, m.Response.text).where(m.Response.id.in_(ids))).all()) if ids else {}
        out = []
        for a, t, p in rows:
            out.append({"assignment_id": a.id, "kind": t.kind, "messages": _messages(p),
                        "responses": [texts[r] for r in json.loads(a.display_order)]})
        return out

    def _insert(self, s: Session, annotator_id: int, j: JudgmentIn) -> JudgmentOut:
        found = s.execute(select(m.Assignment, m.Task.kind, m.Campaign.guideline_version)
                          .join(m.Task, m.Task.id == m.Assignment.task_id)
                          .join(m.Campaign, m.Campaign.id == m.Task.campaign_id)
                          .where(m.Assignment.id == j.assignment_id, m.Assignment.annotator_id == annotator_id)).first()
        if found is None:
            raise NotFound(f"no assignment {j.assignment_id} for you")
        a, kind, guideline_version = found
        shown = json.loads(a.display_order)
        value = to_canonical(kind, j.value, shown)
        version = 1 if a.status == "pending" else (  # pending: never labelled (the first label marks it done)
            s.scalar(select(func.max(m.Judgment.version)).where(m.Judgment.assignment_id == a.id)) or 0) + 1
        if version > MAX_VERSIONS:
            raise Conflict(f"assignment {a.id} has {MAX_VERSIONS} versions already: no more edits are kept")
        row = m.Judgment(client_id=j.client_id, assignment_id=a.id, task_id=a.task_id, annotator_id=annotator_id,
                         version=version, value=json.dumps(value), displayed_order=a.display_order,
                         guideline_version=guideline_version, duration_ms=j.duration_ms)
        s.add(row)
        a.status = "done"
        s.flush()
        return JudgmentOut(judgment_id=row.id, assignment_id=a.id, version=version, client_id=j.client_id,
                           created=True, value=to_display(kind, value, shown))

    def _stored(self, annotator_id: int, j: JudgmentIn) -> JudgmentOut | None:
        with self.read() as s:
            found = s.execute(select(m.Judgment, m.Task.kind).join(m.Task, m.Task.id == m.Judgment.task_id)
                              .where(m.Judgment.client_id == j.client_id)).first()
        if found is None:
            return None
        row, kind = found
        if row.annotator_id != annotator_id or row.assignment_id != j.assignment_id:
            raise Conflict(f"client id {j.client_id!r} was already used for another submission")
        return JudgmentOut(judgment_id=row.id, assignment_id=row.assignment_id, version=row.version,
                           client_id=row.client_id, created=False,
                           value=to_display(kind, json.loads(row.value), json.loads(row.displayed_order)))

    def my_judgments(self, annotator_id: int) -> list[dict[str, Any]]:
        """The annotator's own latest labels (never anyone else's)."""
        with self.read() as s:
            rows = s.execute(select(m.Judgment, m.Task.kind).join(m.Task, m.Task.id == m.Judgment.task_id)
                             .where(m.Judgment.annotator_id == annotator_id).order_by(m.Judgment.id)).all()
        latest: dict[int, Any] = {}
        for j, kind in rows:
            latest[j.assignment_id] = (j, kind)
        return [{"assignment_id": j.assignment_id, "version": j.version, "kind": kind,
                 "value": to_display(kind, json.loads(j.value), json.loads(j.displayed_order)),
                 "created_at": j.created_at.isoformat(timespec="seconds")} for j, kind in latest.values()]

    # ------------------------------------------------------------ AI labels (RLAIF beside RLHF)

    def pairwise_items(self, campaign: str) -> list[dict[str, Any]]:
        """Every pairwise task of a campaign as {task, prompt (stored JSON value), first, second} (texts in the
        task's canonical order) for an AI judge."""
        c = self._pairwise_campaign(campaign, "AI labels are stored for")
        with self.read() as s:
            rows = s.execute(select(m.Task, m.Prompt).join(m.Prompt, m.Prompt.id == m.Task.prompt_id)
                             .where(m.Task.campaign_id == c.id).order_by(m.Task.id)).all()
            text = _response_texts(s, c.id)
        out = []
        for t, p in rows:
            a, b = json.loads(t.response_ids)
            out.append({"task": t.id, "prompt": json.loads(p.prompt), "first": text[a], "second": text[b]})
        return out

    def add_ai_labels(self, labels: Iterable[dict[str, Any]]) -> int:
        """Store AI labels {task, model, principle, p, p_orders}; ``p`` = P(the task's first response is
        better). A label for a (task, model) already stored is replaced. One transaction."""
        n = 0
        with self.write() as s:
            for lab in labels:
                if not 0.0 <= float(lab["p"]) <= 1.0:
                    raise RlhaifError(f"AI label for task {lab['task']}: p={lab['p']} is not a probability")
                row = s.scalar(select(m.AILabel).where(m.AILabel.task_id == lab["task"],
                                                       m.AILabel.model == lab["model"]))
                if row is None:
                    if s.get(m.Task, lab["task"]) is None:
                        raise NotFound(f"no task {lab['task']}")
                    row = m.AILabel(task_id=lab["task"], model=lab["model"])
                    s.add(row)
                row.principle, row.p = lab["principle"], float(lab["p"])
                row.p_orders = json.dumps(list(lab.get("p_orders") or []))
                n += 1
        return n

    def ai_labels(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """Stored AI labels as {task, model, principle, p, p_orders, responses (the task's ids, canonical order)}."""
        q = select(m.AILabel, m.Task).join(m.Task, m.Task.id == m.AILabel.task_id).order_by(m.AILabel.id)
        if campaign is not None:
            q = q.join(m.Campaign, m.Campaign.id == m.Task.campaign_id).where(m.Campaign.name == campaign)
        with self.read() as s:
            return [{"task": t.id, "model": a.model, "principle": a.principle, "p": a.p,
                     "p_orders": json.loads(a.p_orders), "responses": json.loads(t.response_ids)}
                    for a, t in s.execute(q).all()]

    def set_ai_suggestions(self, campaign: str, on: bool) -> None:
        """Show (or hide) the AI label of each pairwise task to its annotators as a suggestion."""
        c = self.campaign(campaign)
        with self.write() as s:
            s.get(m.Campaign, c.id).show_ai_suggestions = bool(on)

    # ------------------------------------------------------------ admin and aggregation

    def count_judgments(self) -> int:
        with self.read() as s:
            return int(s.scalar(select(func.count()).select_from(m.Judgment)) or 0)

    def client_ids(self) -> list[str]:
        with self.read() as s:
            return list(s.scalars(select(m.Judgment.client_id)))

    def latest_judgments(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """The latest version of every assignment's judgment, in the shape ``feedback.aggregate`` reads."""
        q = (select(m.Judgment, m.Annotator.name, m.Task).join(m.Annotator, m.Annotator.id == m.Judgment.annotator_id)
             .join(m.Task, m.Task.id == m.Judgment.task_id).order_by(m.Judgment.assignment_id, m.Judgment.version))
        if campaign is not None:
            q = q.join(m.Campaign, m.Campaign.id == m.Task.campaign_id).where(m.Campaign.name == campaign)
        with self.read() as s:
            rows = s.execute(q).all()
        latest: dict[int, dict[str, Any]] = {}
        for j, name, t in rows:
            latest[j.assignment_id] = {"annotator": name, "task": t.id, "kind": t.kind, "value": json.loads(j.value),
                                       "responses": json.loads(t.response_ids), "version": j.version,
                                       "duration_ms": j.duration_ms, "guideline_version": j.guideline_version,
                                       "selection": json.loads(t.selection) if t.selection else None}
        return list(latest.values())

    def responses(self, campaign: str | None = None) -> dict[int, dict[str, Any]]:
        """{response id: {text, model, prompt (stored JSON value), prompt_id}} for aggregation and export."""
        q = select(m.Response, m.Prompt).join(m.Prompt, m.Prompt.id == m.Response.prompt_id)
        if campaign is not None:
            q = q.join(m.Campaign, m.Campaign.id == m.Prompt.campaign_id).where(m.Campaign.name == campaign)
        with self.read() as s:
            return {r.id: {"text": r.text, "model": r.model, "prompt": json.loads(p.prompt), "prompt_id": p.id}
                    for r, p in s.execute(q).all()}

    def gold(self, campaign: str | None = None) -> list[dict[str, Any]]:
        q = select(m.Task).where(m.Task.gold.is_not(None))
        if campaign is not None:
            q = q.join(m.Campaign, m.Campaign.id == m.Task.campaign_id).where(m.Campaign.name == campaign)
        with self.read() as s:
            return [{"task": t.id, "kind": t.kind, "value": json.loads(t.gold), "responses": json.loads(t.response_ids),
                     "annotator": "gold"} for t in s.scalars(q)]

    def progress(self) -> list[dict[str, Any]]:
        """Per campaign: tasks, assignments, done assignments, judgments (all versions)."""
        out = []
        with self.read() as s:
            for c in s.scalars(select(m.Campaign).order_by(m.Campaign.id)):
                tasks = s.scalar(select(func.count()).select_from(m.Task).where(m.Task.campaign_id == c.id))
                q = select(func.count()).select_from(m.Assignment).join(m.Task).where(m.Task.campaign_id == c.id)
                assigned = s.scalar(q)
                done = s.scalar(q.where(m.Assignment.status == "done"))
                out.append({"campaign": c.name, "kind": c.kind, "overlap": c.overlap, "tasks": int(tasks or 0),
                            "assignments": int(assigned or 0), "done": int(done or 0)})
        return out
