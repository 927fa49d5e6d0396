"""A throwaway ``redis-server`` (the Debian package; ``make test`` installs it) on a free loopback
port, for tests that share state between processes through Redis.

``running_redis()`` is the context manager; ``redis_url`` the pytest fixture over it (import it into
a test module with ``from redis_server import redis_url  # noqa: F401``). Nothing is persisted:
no RDB snapshots, no append-only file."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from test_operations import free_port

REDIS_SERVER = "redis-server"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
PORT_ATTEMPTS = 3  # another process may take the free port between free_port() and redis' bind


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _wait_for_ping(proc: subprocess.Popen, url: str, log) -> bool:
    """True once the server answers PING; False if it exited (e.g. its port was taken)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while proc.poll() is None:
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S:.0f} s:\n{log.read()}")
            time.sleep(0.05)
        return False
    finally:
        client.close()


@contextmanager
def running_redis() -> Iterator[str]:
    """Start ``redis-server`` on a free 127.0.0.1 port, yield its URL once it answers PING, stop it
    afterwards (SIGTERM, then SIGKILL past ``STOP_TIMEOUT_S``)."""
    if shutil.which(REDIS_SERVER) is None:
        raise RuntimeError("redis-server is not installed: `make /usr/bin/redis-server` (Debian's redis-server package)")
    with tempfile.TemporaryFile("w+") as log:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            url = f"redis://127.0.0.1:{port}"
            proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT)
            try:
                if _wait_for_ping(proc, url, log):
                    yield url
                    return
            finally:
                _stop(proc)
        log.seek(0)
        raise RuntimeError(f"redis-server did not start in {PORT_ATTEMPTS} attempts:\n{log.read()}")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """The URL (``redis://127.0.0.1:PORT``) of a fresh redis-server, one per test module."""
    with running_redis() as url:
        yield url
