"""Batch jobs: many chats submitted at once, stored in a database, run at low priority in the
engine's spare capacity, and kept through a restart (``store``, ``intake``, ``runner``)."""
