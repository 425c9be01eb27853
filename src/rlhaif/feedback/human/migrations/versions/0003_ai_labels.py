"""AI labels beside human judgments: the judge's soft label per pairwise task, and a per-campaign switch that
shows them to annotators as suggestions (off by default).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "ai_labels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False, index=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("principle", sa.String(200), nullable=False),
        sa.Column("p", sa.Float, nullable=False),
        sa.Column("p_orders", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("task_id", "model"),
    )
    # a plain ADD COLUMN (SQLite has it): a batch copy of campaigns would break the foreign keys that point at it
    op.add_column("campaigns", sa.Column("show_ai_suggestions", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("show_ai_suggestions")
    op.drop_table("ai_labels")
