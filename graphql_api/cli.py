"""``smollm-graphql``: the package's one console script.

- ``serve``: the GraphQL API (what ``python -m graphql_api`` runs), with the model in-process, or
  over ``INFERENCE_URL`` without loading it; its flags are ``ApiSettings``' and ``EngineConfig``'s
  (the engine's are ignored with ``INFERENCE_URL``).
- ``serve-inference``: the inference tier alone (``python -m inference serve``).
- ``warm``: build the model cache once (``python -m inference warm``).
- ``keys new NAME``: a new API key, and its line for ``API_KEYS_FILE``.

Every setting is a flag and still its environment variable (flag over variable over default);
``smollm-graphql COMMAND --help`` lists them with both names and the default. The machinery is
``inference.cli``'s. Nothing here imports torch until a command loads the model.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # "Ready in" counts from here: the first import of the console script

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import uvicorn  # noqa: E402

from inference.cli import SERVE_INFERENCE, WARM, Command, Parsed, run_cli  # noqa: E402
from inference.engine.config import EngineConfig  # noqa: E402

from .settings import ApiSettings  # noqa: E402

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("graphql_api")
PROG = "smollm-graphql"


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: readiness goes to 503 and new chats get UNAVAILABLE at once, chats in
    flight get up to ``drain_timeout_s`` to finish, then the server stops (the engine's stop ends
    any left with an error) and the process exits 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, state: State) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame) -> None:
        if self.state.draining or self.state.engine.target is None:
            return super().handle_exit(sig, frame)
        self.state.draining = True
        log.info("draining: %d chats in flight, up to %.0f s", self.state.in_flight(),
                 self.state.settings.drain_timeout_s)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        deadline = time.monotonic() + self.state.settings.drain_timeout_s
        while self.state.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        log.info("drained (%d chats left); stopping", self.state.in_flight())
        self.should_exit = True  # not uvicorn's handle_exit: it would re-raise the signal, and we exit 0


def run_server(settings: ApiSettings, engine_config: EngineConfig | None) -> int:
    """The GraphQL server until stopped: 0 after a clean stop or a drain, 1 when the engine could not start."""
    from http_common import tracing
    from http_common.logs import configure_logging
    from http_common.server import uvicorn_config

    from .app import create_app

    configure_logging(settings.log_format)
    tracing.configure_from_env("smollm-graphql")

    def ready() -> None:
        print(f"Ready in {time.perf_counter() - STARTED:.1f} s: GraphiQL at "
              f"http://{settings.host}:{settings.port}/graphql", flush=True)

    failures: list[Exception] = []

    def failed(exc: Exception) -> None:
        failures.append(exc)
        print(f"Could not start: {exc}", file=sys.stderr, flush=True)
        server.should_exit = True

    app = create_app(settings, engine_config, on_ready=ready, on_failed=failed)
    config = uvicorn_config(app, settings.host, settings.port, read_timeout_s=settings.http_read_timeout_s,
                            max_message_bytes=settings.max_body_bytes, max_header_bytes=settings.max_header_bytes,
                            timeout_graceful_shutdown=5)
    server = DrainingServer(config, app.state.api)
    try:
        server.run()
    finally:
        tracing.shutdown()
    return 1 if failures else 0


def serve(parsed: Parsed) -> int:
    """``serve``: the API's settings, and the engine's unless ``INFERENCE_URL`` names upstreams."""
    settings = parsed.settings(ApiSettings)
    return run_server(settings, None if settings.inference_url else parsed.settings(EngineConfig))


def keys_arguments(parser: argparse.ArgumentParser) -> None:
    """``keys new NAME``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="print a new key, then its API_KEYS_FILE line",
                         description="Print a new API key (give it to the caller), then the line for API_KEYS_FILE "
                                     "(it holds the key's SHA-256, not the key).")
    new.add_argument("name", metavar="NAME", help="the key's name: a plain word (no ':', spaces or control characters)")


def keys(parsed: Parsed) -> int:
    """``keys new NAME``: a new key, then the line for API_KEYS_FILE."""
    from http_common.keys import new_key

    name: str = parsed.namespace.name
    if not name or ":" in name or not name.isprintable() or " " in name:
        parsed.error("NAME must be a plain word (no ':', spaces or control characters)")
    key, line = new_key(name)
    print(key)
    print(line)
    return 0


SERVE = Command(
    "serve", "serve the GraphQL API (GraphiQL at /graphql)", serve, settings=lambda: (
        (ApiSettings, "API settings (ApiSettings)"),
        (EngineConfig, "engine settings (EngineConfig): the in-process model's, ignored with INFERENCE_URL")),
    description="Serve the GraphQL API with the model in-process, or over the inference servers of INFERENCE_URL "
                "(the engine's settings are then ignored). `python -m graphql_api` is the same.")
KEYS = Command("keys", "manage API keys: `keys new NAME`", keys, arguments=keys_arguments)
COMMANDS: tuple[Command, ...] = (SERVE, SERVE_INFERENCE, WARM, KEYS)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``smollm-graphql COMMAND [options]``; its exit status."""
    return run_cli(COMMANDS, argv, prog=PROG,
                   description="A GraphQL API over a continuous-batching engine for SmolLM2-135M-Instruct. "
                               "Every setting is a flag and an environment variable: see COMMAND --help.")


if __name__ == "__main__":
    sys.exit(main())
