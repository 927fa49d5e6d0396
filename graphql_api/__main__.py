"""`python -m graphql_api`: the GraphQL server with the embedded engine and the real model."""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

import uvicorn  # noqa: E402

from inference.engine.config import EngineConfig  # noqa: E402
from inference.http_server import uvicorn_config  # noqa: E402
from inference.keys import new_key  # noqa: E402

from .app import State, create_app  # noqa: E402
from .observability import configure_logging  # noqa: E402
from .settings import ApiSettings  # noqa: E402

log = logging.getLogger("graphql_api")


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


def keys(argv: list[str]) -> None:
    """`python -m graphql_api keys new NAME`: a new key, then the line for API_KEYS_FILE."""
    parser = argparse.ArgumentParser(prog="python -m graphql_api keys")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("new", help="print a new key and its API_KEYS_FILE line").add_argument("name")
    args = parser.parse_args(argv)
    if not args.name or ":" in args.name or not args.name.isprintable() or " " in args.name:
        parser.error("NAME must be a plain word (no ':', spaces or control characters)")
    key, line = new_key(args.name)
    print(key)
    print(line)


def main() -> None:
    if sys.argv[1:2] == ["keys"]:
        return keys(sys.argv[2:])
    parser = argparse.ArgumentParser(description="GraphQL API over SmolLM2 (settings also come from the environment)")
    parser.add_argument("--host", help="bind address (HOST)")
    parser.add_argument("--port", type=int, help="port (PORT)")
    parser.add_argument("--model-path", help="a .gguf file or HF model directory (MODEL_PATH)")
    args = parser.parse_args()
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = ApiSettings(**overrides)
    configure_logging(settings.log_format)

    def ready() -> None:
        print(f"Ready in {time.perf_counter() - STARTED:.1f} s: GraphiQL at "
              f"http://{settings.host}:{settings.port}/graphql", flush=True)

    failures: list[Exception] = []

    def failed(exc: Exception) -> None:
        failures.append(exc)
        print(f"Could not start: {exc}", file=sys.stderr, flush=True)
        server.should_exit = True

    engine_config = None if settings.inference_url else (
        EngineConfig(model_path=args.model_path) if args.model_path else EngineConfig())
    app = create_app(settings, engine_config, on_ready=ready, on_failed=failed)
    config = uvicorn_config(app, settings.host, settings.port, read_timeout_s=settings.http_read_timeout_s,
                            max_message_bytes=settings.max_body_bytes, timeout_graceful_shutdown=5)
    server = DrainingServer(config, app.state.api)
    server.run()
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
