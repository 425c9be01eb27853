"""Why a task was asked: the selection rule, its score and rank when the task came from a budgeted import
(`rlhaif feedback import --select ... --budget N`); null for tasks imported whole.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    # a plain ADD COLUMN (SQLite has it): a batch copy of tasks would break the foreign keys that point at it
    op.add_column("tasks", sa.Column("selection", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("selection")
