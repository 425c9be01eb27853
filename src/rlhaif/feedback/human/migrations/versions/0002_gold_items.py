"""Gold items (a task's known answer, to measure annotator reliability) and an index on judgments.task_id.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("gold", sa.Text, nullable=True))
    op.create_index("ix_judgments_task_id", "judgments", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_judgments_task_id", table_name="judgments")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("gold")
