"""Server-side sign-in sessions (the cookie holds a random session id, never the token) and an annotator
status (active | revoked | removed) for revoking access.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    # a plain ADD COLUMN (see 0003: a batch copy of annotators would break the foreign keys that point at it)
    op.add_column("annotators", sa.Column("status", sa.String(20), nullable=False, server_default="active"))


def downgrade() -> None:
    with op.batch_alter_table("annotators") as batch:
        batch.drop_column("status")
    op.drop_table("sessions")
