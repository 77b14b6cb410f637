from __future__ import annotations

import logging

import pytest

from embench import plugins


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own data, cache and output folders and a fresh plugin manager."""
    monkeypatch.setenv("EMBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMBENCH_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("EMBENCH_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never reach the hub (it would retry)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def fake_plugin():
    """Register the fake encoder + task plugin in-process for one test."""
    from tests.fakes import FakePlugin

    plugin = FakePlugin()
    plugins.register_plugin(plugin, name="fake")
    yield plugin
    plugins.unregister_plugin("fake")


@pytest.fixture
def hf_warnings():
    """Records what transformers logs at warning level (e.g. its LOAD REPORT)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def hf_hub(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache that huggingface_hub reads, offline (fill it with
    :func:`tests.helpers_hub.snapshot_folder`). Its constants are read at import, so they are
    patched, not the environment."""
    import huggingface_hub.constants as hf_constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return root
