"""A throwaway PostgreSQL cluster (Debian's ``postgresql``; ``make test`` installs it) on a free
loopback port, for tests that share a jobs database between processes.

``running_postgres()`` makes a cluster with ``initdb`` in a temporary directory, runs ``postgres``
on 127.0.0.1 (its socket in that directory, trust authentication: nothing outside this machine
can reach it), yields its URL once it accepts connections, then stops it and deletes the
directory. As root, initdb and the server run as the ``postgres`` user that the Debian package
creates (PostgreSQL refuses to run as root). ``postgres_url`` is the pytest fixture over it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_operations import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3


def binary(name: str) -> str:
    """``initdb`` or ``postgres``: on PATH, or where Debian puts them (/usr/lib/postgresql/N/bin)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: `make postgresql` (Debian's postgresql package)")
    return found


def _as_owner(owner: pwd.struct_passwd | None, cwd: str) -> dict:
    """Popen's keywords to run as ``owner`` (no wrapper process, so signals reach postgres itself)."""
    return {"cwd": cwd} if owner is None else {"cwd": cwd, "user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_postgres() -> Iterator[str]:
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="pg-test-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if owner is not None:
            os.chown(tmp, owner.pw_uid, owner.pw_gid)
            os.chown(data, owner.pw_uid, owner.pw_gid)
        subprocess.run([binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120, **_as_owner(owner, tmp))
        log_path = Path(tmp) / "server.log"
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            with open(log_path, "w") as log:
                if owner is not None:
                    os.chown(log_path, owner.pw_uid, owner.pw_gid)
                proc = subprocess.Popen([binary("postgres"), "-D", str(data), "-p", str(port), "-k", tmp,
                                         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                        stdout=log, stderr=subprocess.STDOUT, **_as_owner(owner, tmp))
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while proc.poll() is None and not _accepting(port):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"postgres did not start in {START_TIMEOUT_S:.0f} s:\n{log_path.read_text()}")
                    time.sleep(0.1)
                if proc.poll() is None:
                    time.sleep(0.3)  # accepting TCP a moment before it accepts logins
                    yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
                    return
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: clients are disconnected
                    try:
                        proc.wait(STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(STOP_TIMEOUT_S)
        raise RuntimeError(f"postgres did not start in {PORT_ATTEMPTS} attempts:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of a fresh PostgreSQL cluster, one per test module."""
    with running_postgres() as url:
        yield url
