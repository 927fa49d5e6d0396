"""`python -m graphql_api`: the GraphQL server with the embedded engine and the real model."""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import logging  # noqa: E402

import uvicorn  # noqa: E402

from .app import create_app  # noqa: E402
from .settings import ApiSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="GraphQL API over SmolLM2 (settings also come from the environment)")
    parser.add_argument("--host", help="bind address (HOST)")
    parser.add_argument("--port", type=int, help="port (PORT)")
    parser.add_argument("--model-path", help="a .gguf file or HF model directory (MODEL_PATH)")
    args = parser.parse_args()
    if args.model_path:
        import os

        os.environ["MODEL_PATH"] = args.model_path
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = ApiSettings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready() -> None:
        print(f"Ready in {time.perf_counter() - STARTED:.1f} s: GraphiQL at "
              f"http://{settings.host}:{settings.port}/graphql", flush=True)

    uvicorn.run(create_app(settings, on_ready=ready), host=settings.host, port=settings.port,
                log_level="warning", ws="websockets-sansio")


if __name__ == "__main__":
    main()
