"""A fake Hugging Face hub cache in the hub's own folder layout, for offline tests of code
that resolves hub ids (see the ``hf_hub`` fixture)."""

from __future__ import annotations

from pathlib import Path


def snapshot_folder(hub: Path, model_id: str, commit: str) -> Path:
    """The folder of snapshot ``commit`` of ``model_id``, with the ``main`` branch pointed at
    it, as ``hf download`` leaves the cache; the caller saves a model into it."""
    repo = hub / f"models--{model_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder
