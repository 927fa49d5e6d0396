"""`python -m inference warm`: load the model once so that the dequantized cache exists."""

from __future__ import annotations

import argparse
import time

from .config import EngineConfig
from .model_loader import cached_dir, locate_model


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m inference")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("warm", help="build the dequantized safetensors cache of a GGUF model")
    args = parser.parse_args()
    if args.command == "warm":
        config = EngineConfig()
        source = locate_model(config.model_path)
        started = time.perf_counter()
        where = cached_dir(source, config.model_cache_dir) if source.kind == "gguf" else source.path
        print(f"model ready at {where} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
