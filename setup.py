"""Builds the block kernels at install (``inference/engine/kernels_build.py``); the rest of the
package is declared in pyproject.toml.

The extension is optional: where it cannot be built (no C compiler, a CPU other than x86-64) the
install goes on without it, and ``WEIGHTS=native`` then says why and runs the exact weights.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Any failure to build the kernels leaves a package that runs, without native weights."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self.warn(f"the block kernels were not built ({exc}); WEIGHTS=native will fall back to exact")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn(f"the block kernels were not built ({exc}); WEIGHTS=native will fall back to exact")


setup(cffi_modules=["inference/engine/kernels_build.py:ffibuilder"], cmdclass={"build_ext": OptionalBuildExt})
