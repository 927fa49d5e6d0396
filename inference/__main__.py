"""`python -m inference serve`: the engine as an HTTP service; `warm`: build the model cache."""

from __future__ import annotations

import argparse
import logging
import time

from .engine.config import EngineConfig
from .engine.model_loader import cached_dir, locate_model


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .engine.async_engine import AsyncEngine
    from .engine.llm_engine import LLMEngine
    from .http_server import uvicorn_config
    from .service.app import ServiceSettings, create_service

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    if args.no_generate_batch:
        overrides["generate_batch"] = False
    settings = ServiceSettings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    engine = AsyncEngine(LLMEngine.from_config(EngineConfig()))
    print(f"Inference service ready in {time.perf_counter() - started:.1f} s at "
          f"http://{settings.host}:{settings.port}/v1/chat/completions", flush=True)
    config = uvicorn_config(create_service(engine, settings), settings.host, settings.port,
                            read_timeout_s=settings.read_timeout_s, max_message_bytes=settings.max_body_bytes)
    uvicorn.Server(config).run()


def warm() -> None:
    config = EngineConfig()
    source = locate_model(config.model_path)
    started = time.perf_counter()
    where = cached_dir(source, config.model_cache_dir) if source.kind == "gguf" else source.path
    if source.kind == "gguf":  # WEIGHTS=native: split the GGUF blocks, build and time the kernels, once
        from .engine.llm_engine import LLMEngine

        engine = LLMEngine.from_config(config.model_copy(update={"kv_cache_tokens": config.max_model_len}))
        print(f"weights: {engine.weights.mode} ({engine.weights.reason})")
    print(f"model ready at {where} ({time.perf_counter() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m inference")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("warm", help="build the dequantized safetensors cache of a GGUF model")
    srv = sub.add_parser("serve", help="serve the engine over HTTP (OpenAI-compatible and /generate_batch)")
    srv.add_argument("--host", help="bind address (INFERENCE_HOST, default 127.0.0.1)")
    srv.add_argument("--port", type=int, help="port (INFERENCE_PORT, default 8001)")
    srv.add_argument("--no-generate-batch", action="store_true", help="do not offer POST /generate_batch")
    args = parser.parse_args()
    if args.command == "warm":
        warm()
    else:
        serve(args)


if __name__ == "__main__":
    main()
