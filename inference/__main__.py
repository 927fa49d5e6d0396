"""`python -m inference serve`: the engine as an HTTP service; `warm`: build the model cache.

The same commands as `smollm-graphql serve-inference` and `smollm-graphql warm` (``inference.cli``):
every setting is a flag and an environment variable; `--help` lists them.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
