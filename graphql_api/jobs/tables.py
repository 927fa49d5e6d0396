"""The jobs database: one row per job, one per item (line). Times are UNIX seconds (floats), the
same in SQLite and PostgreSQL. The schema itself is made by the Alembic migrations in
``migrations/versions``; these tables are what the code reads and writes, and must match them."""

from __future__ import annotations

import enum

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

ItemId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY


class JobStatus(enum.StrEnum):
    """A job's life: VALIDATING (its input is being stored) -> QUEUED -> RUNNING -> COMPLETED; or
    CANCELLING -> CANCELLED, EXPIRED (past its completion window), FAILED (its input was refused)."""

    VALIDATING = "VALIDATING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def active(self) -> bool:
        """Its items may still run."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)


class ItemStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # claimed by ``claimed_by`` until ``lease_until``
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # cancelled or expired before it ended


jobs = Table(
    "batch_jobs", metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(128), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("job_metadata", Text),  # JSON
    Column("total", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("cancelled", Integer, nullable=False, default=0),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("cancelled_at", Float),
    Column("expires_at", Float, nullable=False),
)

items = Table(
    "batch_items", metadata,
    Column("id", ItemId, primary_key=True, autoincrement=True),
    Column("job_id", String(40), ForeignKey("batch_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),  # position in the input, from 0
    Column("custom_id", String(256), nullable=False),
    Column("status", String(12), nullable=False),
    Column("request", Text),  # the OpenAI chat-completion body to run (JSON); null for a refused line
    Column("result", Text),  # an ItemOutcome (outcome.py), as JSON, once ended
    Column("claimed_by", String(40)),
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("finished_at", Float),
    UniqueConstraint("job_id", "idx", name="uq_batch_items_job_idx"),
    Index("ix_batch_items_job_status", "job_id", "status"),
)
