"""An ASGI app served in the benchmark's own event loop on a free loopback port, as the real server is."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import uvicorn

from http_common.server import uvicorn_config


async def serve(app: Any, max_message_bytes: int = 16 * 2**20) -> tuple[uvicorn.Server, asyncio.Task, str]:
    """The server, its task and its base URL, once it listens."""
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # accepted sockets inherit it; with Nagle on, every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, read_timeout_s=10.0, max_message_bytes=max_message_bytes))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("a benchmark server did not start")
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


async def wait_ready(client: httpx.AsyncClient, base: str, timeout_s: float = 120.0) -> None:
    """Until ``base``'s /readyz answers 200 (the model loaded)."""
    deadline = time.monotonic() + timeout_s
    while (await client.get(f"{base}/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base} did not get ready")
        await asyncio.sleep(0.2)


async def stop(server: uvicorn.Server, task: asyncio.Task) -> None:
    server.should_exit = True
    await task
