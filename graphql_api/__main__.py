"""`python -m graphql_api [options]`: `smollm-graphql serve [options]`, the GraphQL server (with the
embedded engine and the real model unless INFERENCE_URL is set); `python -m graphql_api keys new NAME`
is `smollm-graphql keys new NAME`. Both are ``graphql_api.cli``; `--help` lists every setting."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if argv[:1] == ["keys"] else ["serve", *argv]))
