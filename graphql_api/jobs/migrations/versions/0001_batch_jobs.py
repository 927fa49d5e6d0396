"""Batch jobs and their items.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ItemId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("job_metadata", sa.Text),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("cancelled_at", sa.Float),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "batch_items",
        sa.Column("id", ItemId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("batch_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("custom_id", sa.String(256), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("request", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("claimed_by", sa.String(40)),
        sa.Column("lease_until", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("job_id", "idx", name="uq_batch_items_job_idx"),
    )
    op.create_index("ix_batch_items_job_status", "batch_items", ["job_id", "status"])


def downgrade() -> None:
    op.drop_table("batch_items")
    op.drop_table("batch_jobs")
