"""The feedback store's tables (SQLAlchemy 2.x). The schema itself is created by the Alembic migrations in
``migrations/``; these classes must match the head revision (a test checks).

A judgment is never overwritten: an edit adds a row with ``version + 1``; the latest version counts.
``client_id`` is made by the client for each submission, so a retried post is stored once.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # pairwise | ranking | rating | thumbs | aspects
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # annotators per task
    guidelines: Mapped[str] = mapped_column(Text, default="")
    guideline_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    # revision 0003: show AI labels to annotators as suggestions (off by default: they anchor people)
    show_ai_suggestions: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token; the token is never stored
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    # revision 0004: active | revoked (cannot sign in; keeps their tasks) | removed (pending tasks released)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")


class SignInSession(Base):
    """Revision 0004: a browser session. The cookie holds a random session id; the table holds only its
    SHA-256, the annotator and when it expires. Signing out, revoking or rotating a token deletes the rows."""

    __tablename__ = "sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("campaign_id", "external_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    external_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)  # JSON: text or a list of messages


class Response(Base):
    __tablename__ = "responses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200), default="")  # model of origin: stored, never shown
    idx: Mapped[int] = mapped_column(Integer, default=0)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    kind: Mapped[str] = mapped_column(String(20))
    response_ids: Mapped[str] = mapped_column(Text)  # JSON list of response ids
    gold: Mapped[str | None] = mapped_column(Text, nullable=True)  # revision 0002: the known answer (canonical value)
    selection: Mapped[str | None] = mapped_column(Text, nullable=True)  # revision 0005: {rule, score, rank} or null


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    display_order: Mapped[str] = mapped_column(Text)  # JSON list of response ids as this annotator sees them
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | done


class Judgment(Base):
    __tablename__ = "judgments"
    __table_args__ = (UniqueConstraint("assignment_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)  # index: revision 0002
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    version: Mapped[int] = mapped_column(Integer)
    value: Mapped[str] = mapped_column(Text)  # JSON, canonical (response ids, not screen positions)
    displayed_order: Mapped[str] = mapped_column(Text)  # JSON list of response ids as shown
    guideline_version: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class AILabel(Base):
    """Revision 0003: an AI judge's soft label of a pairwise task. ``p`` is the probability that the task's
    first response (``response_ids[0]``) is the better one, both display orders averaged. One row per task
    and judge model; relabelling replaces it (an AI label is recomputable, a human one is not)."""

    __tablename__ = "ai_labels"
    __table_args__ = (UniqueConstraint("task_id", "model"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    principle: Mapped[str] = mapped_column(String(200))
    p: Mapped[float] = mapped_column(Float)
    p_orders: Mapped[str] = mapped_column(Text)  # JSON [P(A) first response shown as A, P(A) shown as B]
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
