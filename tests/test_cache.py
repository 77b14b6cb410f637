"""The cache key, fp16 safetensors shards, atomic writes and tolerance of debris."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from embench.cache import CacheKey, EmbeddingCache, source_fingerprint


def _key(**changes) -> CacheKey:
    base = CacheKey(encoder="enc", encoder_version="1", weights="pretrained", revision="abc",
                    sample_rate=16000, window_s=5.0, hop_s=None, frame_rate=1.0,
                    compute_dtype="fp32", dataset_id="ds", dataset_revision=None)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("field,value", [
    ("encoder", "other"), ("encoder_version", "2"), ("weights", "random"), ("revision", "def"),
    ("weights_source", "/ckpt#abc"),
    ("sample_rate", 24000), ("window_s", 10.0), ("hop_s", 2.5), ("frame_rate", 2.0),
    ("compute_dtype", "bf16-autocast"), ("dataset_id", "ds2"), ("dataset_revision", "r1"),
    ("format_version", 99),
])
def test_every_key_field_changes_the_digest(field, value):
    assert _key().digest() != _key(**{field: value}).digest()
    assert _key().digest() == _key().digest()


def test_round_trip_is_fp16_per_layer(tmp_path):
    cache = EmbeddingCache(tmp_path, _key())
    cache.prepare()
    layers = [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
              np.ones((3, 6), dtype=np.float32)]
    cache.write_shard({"a/b c#1": (3.0, layers)})
    fresh = EmbeddingCache(tmp_path, _key())
    assert fresh.done_ids() == {"a/b c#1"}
    got = fresh.read("a/b c#1")
    assert [g.dtype for g in got] == [np.float16, np.float16]
    np.testing.assert_allclose(got[0], layers[0], atol=2e-3)
    assert fresh.read_many(["a/b c#1"], 1)[0].shape == (3, 6)
    assert json.loads((fresh.dir / "key.json").read_text())["encoder"] == "enc"


def test_shards_are_safetensors_not_pickle(tmp_path):
    cache = EmbeddingCache(tmp_path, _key())
    cache.prepare()
    path = cache.write_shard({"x": (1.0, [np.zeros((1, 2), np.float32)])})
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_len])
    assert header["__metadata__"]["format"] == "1"
    assert not path.read_bytes().startswith(b"\x80")  # pickle protocol marker


def test_debris_from_killed_runs_is_ignored_and_cleaned(tmp_path):
    cache = EmbeddingCache(tmp_path, _key())
    cache.prepare()
    cache.write_shard({"ok": (1.0, [np.zeros((1, 2), np.float32)])})
    dead_tmp = cache.dir / ".shard-dead.safetensors.999999999.abc.tmp"
    dead_tmp.write_bytes(b"partial")
    (cache.dir / "shard-garbage.safetensors").write_bytes(b"\x00\x01truncated")
    fresh = EmbeddingCache(tmp_path, _key())
    assert fresh.done_ids() == {"ok"}
    fresh.prepare()
    assert not dead_tmp.exists()


def test_other_keys_do_not_share_entries(tmp_path):
    a = EmbeddingCache(tmp_path, _key())
    a.prepare()
    a.write_shard({"x": (1.0, [np.zeros((1, 2), np.float32)])})
    assert EmbeddingCache(tmp_path, _key(frame_rate=2.0)).done_ids() == set()


def test_weights_fingerprint_follows_checkpoint_files(tmp_path):
    from embench.cache import weights_fingerprint

    assert weights_fingerprint(None) is None
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    first = weights_fingerprint(str(tmp_path))
    assert first == weights_fingerprint(str(tmp_path)) and first.startswith(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"123456")
    assert weights_fingerprint(str(tmp_path)) != first


def test_temporaries_of_other_hosts_are_left_alone(tmp_path):
    """Ranks on other nodes share the cache folder: their in-progress writes must survive a
    prepare() here, while this host's dead writes are reaped."""
    from embench.cache import _host_tag

    cache = EmbeddingCache(tmp_path, _key())
    cache.prepare()
    other = cache.dir / ".shard-x.safetensors.othernode-999999999.abc.tmp"
    mine_dead = cache.dir / f".shard-y.safetensors.{_host_tag()}-999999999.abc.tmp"
    for tmp in (other, mine_dead):
        tmp.write_bytes(b"partial")
    EmbeddingCache(tmp_path, _key()).prepare()
    assert other.exists() and not mine_dead.exists()


def test_an_entry_counts_only_for_the_audio_it_was_made_from(tmp_path):
    """Entries record the fingerprint of their clip's audio: another file under the same id is
    not served them, and of two entries the one matching the audio now is read."""
    ones, twos = [np.ones((2, 3), np.float32)], [np.full((2, 3), 2, np.float32)]
    first = EmbeddingCache(tmp_path, _key(), {"c": "old"})
    first.prepare()
    first.write_shard({"c": (2.0, ones)})
    assert EmbeddingCache(tmp_path, _key(), {"c": "new"}).done_ids() == set()
    assert EmbeddingCache(tmp_path, _key()).done_ids() == {"c"}  # a reader without sources
    EmbeddingCache(tmp_path, _key(), {"c": "new"}).write_shard({"c": (2.0, twos)})
    for fingerprint, value in (("old", 1), ("new", 2)):
        got = EmbeddingCache(tmp_path, _key(), {"c": fingerprint}).read("c")[0]
        assert (got == value).all()


def test_source_fingerprint_sees_content_and_size_not_timestamps(tmp_path):
    path = tmp_path / "a.wav"
    data = bytes(range(256)) * 100  # 25,600 bytes: three distinct blocks
    path.write_bytes(data)
    before = source_fingerprint(path)
    path.write_bytes(data)  # rewritten: a new modification time, the same bytes
    assert source_fingerprint(path) == before == source_fingerprint(data)
    for changed in (data[:-1], b"\xff" + data[1:], data[:-1] + b"\x00"):
        path.write_bytes(changed)
        assert source_fingerprint(path) != before
    assert source_fingerprint(data, 1.0, 2.0) != source_fingerprint(data)
    assert source_fingerprint(tmp_path / "missing.wav") == "unreadable"
