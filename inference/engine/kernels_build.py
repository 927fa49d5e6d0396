"""How the block kernels (``csrc/``) are built: cffi compiles them with their binding into the
extension module ``inference.engine._kernels`` when the package is installed (``setup.py``).

The binding is generated from ``csrc/kernels.h``, the header every C file includes: the compiler
checks each definition against it, and cffi checks each call from Python against it (argument
count, integer and pointer types), so the two languages cannot drift apart. ``builder`` also makes
the sanitized variant the kernel tests run under AddressSanitizer and UBSan.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("blocks.c", "layer_ops.c", "attention.c", "decode_layers.c", "threads.c")
HEADERS = ("kernels.h", "simd.h")
MODULE = "inference.engine._kernels"
FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-Wmissing-prototypes")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g")


# cffi's generated wrapper is not held to our warnings; the kernels' own files are.
PREAMBLE = """#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "kernels.h"
"""


def declarations() -> str:
    """``kernels.h`` as cffi's ``cdef`` reads it: without the include guard and includes (cffi
    knows the fixed-width integers), keeping each ``#define`` of an integer (cffi checks its value)."""
    lines = CSRC.joinpath("kernels.h").read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("#") or re.fullmatch(r"#define \w+ \d+", line))


def digest() -> str:
    """Of the sources and the flags: what the kernels' timings (the calibration) are keyed on."""
    h = hashlib.sha256(" ".join(FLAGS).encode())
    for name in (*HEADERS, *SOURCES):
        h.update(CSRC.joinpath(name).read_bytes())
    return h.hexdigest()[:16]


def builder(module: str = MODULE, extra_flags: Sequence[str] = (), relative: bool = True) -> FFI:
    """The cffi builder of ``module``. ``relative``: source paths relative to the working directory
    (setuptools wants them so); ``FFI.compile``, which builds from another directory, needs absolute ones."""
    def path(p: Path) -> str:
        return os.path.relpath(p) if relative else str(p)

    ffi = FFI()
    ffi.cdef(declarations())
    flags = [*FLAGS, *extra_flags]
    ffi.set_source(module, PREAMBLE, sources=[path(CSRC / s) for s in SOURCES], include_dirs=[path(CSRC)],
                   extra_compile_args=flags, extra_link_args=["-fopenmp", *extra_flags])
    return ffi


ffibuilder = builder()  # setup.py's cffi_modules entry

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
