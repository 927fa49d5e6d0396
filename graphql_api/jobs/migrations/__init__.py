"""Alembic migrations of the jobs database, run at start-up by ``JobStore.start``."""
