"""Pretrained weights are identified by the hub commit they load from: in the embedding cache
key (a checkpoint updated on the hub never reuses the old one's embeddings), in every result,
and in what ``load`` reads. A fake Hugging Face cache (the hub's own folder layout, with tiny
random models saved by ``save_pretrained``) stands in for the hub, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel

from embench import MissingWeightsError, plugins
from embench.extract import weights_revision
from embench_plugins import clap, mert
from tests.helpers_cli import run_main
from tests.helpers_hub import snapshot_folder
from tests.test_mert import TINY, _TinyMert

CPU = torch.device("cpu")
MERT_ID = "m-a-p/MERT-v1-95M"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def publish(hub: Path, model_id: str, commit: str, seed: int) -> HubertModel:
    """Save a tiny MERT-shaped model as the snapshot ``commit`` of ``model_id``, now ``main``."""
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**TINY))
    model.save_pretrained(snapshot_folder(hub, model_id, commit))
    return model


def _run(out: Path) -> dict:
    plugins.reset()  # a new process: a fresh encoder that has resolved nothing yet
    plugins.register_plugin(_TinyMert(), name="tiny-mert")
    assert run_main(["run", "-e", "mert-v1-95m", "-t", "toy-genres", "--seeds", "1",
                     "--no-progress", "--num-workers", "0", "-o", str(out)]) == 0
    (result,) = json.loads(next(out.glob("run-*.json")).read_text())["results"]
    return result


def test_results_and_cache_follow_the_hub_commit(hf_hub, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "toy")
    publish(hf_hub, MERT_ID, COMMIT_A, seed=1)
    first = _run(tmp_path / "first")
    assert first["encoder_revision"] == COMMIT_A

    publish(hf_hub, MERT_ID, COMMIT_B, seed=2)  # the hub moved on; the cache fetched it
    second = _run(tmp_path / "second")
    assert second["encoder_revision"] == COMMIT_B
    assert second["preprocessing"]["cache_key"] != first["preprocessing"]["cache_key"]
    assert second["extract_s"] is not None
    assert len(list((tmp_path / "cache" / "mert-v1-95m").iterdir())) == 2  # both kept

    again = _run(tmp_path / "again")
    assert again["preprocessing"]["cache_key"] == second["preprocessing"]["cache_key"]


def test_load_reads_the_commit_that_was_resolved(hf_hub) -> None:
    model_a = publish(hf_hub, MERT_ID, COMMIT_A, seed=1)
    enc = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    assert weights_revision(enc, "pretrained", None) == COMMIT_A
    publish(hf_hub, MERT_ID, COMMIT_B, seed=2)  # main moves between the cache lookup and load
    assert enc.weights_revision("pretrained", None) == COMMIT_A  # kept for the whole run
    enc.load(CPU, "pretrained")
    loaded = enc.model.feature_projection.projection.weight
    assert torch.equal(loaded, model_a.feature_projection.projection.weight)


def test_random_weights_and_local_folders_are_not_looked_up(hf_hub, tmp_path) -> None:
    publish(hf_hub, MERT_ID, COMMIT_A, seed=1)
    enc = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    assert enc.weights_revision("random", None) is None
    assert weights_revision(enc, "random", None) is None  # info.revision: none declared
    assert enc.weights_revision("pretrained", str(tmp_path)) is None  # fingerprinted instead
    assert enc.hub.commit is None


def test_nothing_cached_offline_resolves_to_nothing_and_load_explains(hf_hub) -> None:
    enc = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    assert weights_revision(enc, "pretrained", None) is None
    with pytest.raises(MissingWeightsError, match=f"hf download {MERT_ID}"):
        enc.load(CPU, "pretrained")


def test_clap_resolves_and_loads_its_commit(hf_hub, monkeypatch) -> None:
    enc = clap.Clap("clap-music")
    snapshot = snapshot_folder(hf_hub, "laion/larger_clap_music", COMMIT_A)
    (snapshot / "config.json").write_text("{}")
    assert weights_revision(enc, "pretrained", None) == COMMIT_A
    shutil.rmtree(snapshot.parent.parent)  # from here on only the kept commit can say it

    asked: list[str | None] = []

    def fake_load(model_cls, model_id, revision, *args, **kwargs):
        asked.append(revision)
        raise MissingWeightsError("stop here")

    monkeypatch.setattr(clap, "load_model", fake_load)
    with pytest.raises(MissingWeightsError):
        enc.load(CPU, "pretrained")
    assert asked == [COMMIT_A]
