"""Writing one cache shard the size extraction writes for MERT-95M on CUDA (one group: 171
clips of 30 s, 13 layers x 30 one-second frames x 768, fp16: 100 MB) with
``EmbeddingCache.write_shard`` (``safetensors.numpy.save_file``, straight to the file) against the
way it was written before (``safetensors.numpy.save`` to bytes, then a file write), in the same
process. Beside the time, the longest time a second thread waited to run Python meanwhile: the
shard writer is a background thread, and while it holds the GIL neither the decode threads nor
the thread that launches GPU work can run. Run: ``python -m pytest benchmarks
--benchmark-enable -s``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from benchmarks.bench_models import scan_then_write
from embench.cache import CacheKey, EmbeddingCache, _atomic_write
from embench.extract import _write_shard

CLIPS, LAYERS, FRAMES, DIM, SHARDS = 171, 13, 30, 768, 3


@contextmanager
def _running(work: Callable[[threading.Event], None]):
    """``work(stop)`` in a second thread for the duration of the block, told to stop after."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def longest_gil_wait(result: list[float]):
    """Appends to ``result`` the longest gap between the 1 ms naps of a ticking thread."""
    gaps = [0.0]

    def tick(stop: threading.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps[0] = max(gaps[0], now - last - 0.001)
            last = now

    with _running(tick):
        yield
    result.append(gaps[0])


def _shard() -> dict:
    """One group of MERT-95M clips as extraction hands it to the writer."""
    rng = np.random.default_rng(0)
    return {f"clip{c}": (30.0, [rng.standard_normal((FRAMES, DIM)).astype(np.float16)
                                for _ in range(LAYERS)]) for c in range(CLIPS)}


def _cache(root) -> EmbeddingCache:
    key = CacheKey(encoder="bench", encoder_version="1", weights="random", revision=None,
                   weights_source=None, sample_rate=24000, window_s=5.0, hop_s=5.0,
                   frame_rate=1.0, compute_dtype="bf16", dataset_id="bench",
                   dataset_revision=None)
    cache = EmbeddingCache(root, key)
    cache.prepare()
    return cache


def _bytes_then_write(cache: EmbeddingCache, shard: dict) -> None:
    """The former ``write_shard``: the same tensors and metadata through ``save``, the bytes
    then written, synced and renamed."""
    import json
    import uuid

    from safetensors.numpy import save

    tensors = {f"{cid}#L{i}": np.ascontiguousarray(a, dtype=np.float16)
               for cid, (_, layers) in shard.items() for i, a in enumerate(layers)}
    metadata = {"format": "1", "key": cache.key.digest(), "num_layers": str(LAYERS),
                "clips": json.dumps([[cid, float(d)] for cid, (d, _) in shard.items()])}
    data = save(tensors, metadata=metadata)
    _atomic_write(cache.dir / f"shard-{uuid.uuid4().hex}.safetensors",
                  lambda tmp: tmp.write_bytes(data))  # then synced and renamed, as before


def _timed(write: Callable[[], None]) -> tuple[float, float]:
    waits: list[float] = []
    with longest_gil_wait(waits):
        start = time.perf_counter()
        for _ in range(SHARDS):
            write()
        elapsed = time.perf_counter() - start
    return elapsed / SHARDS, waits[0]


def test_write_shard_vs_bytes_then_write(benchmark, tmp_path):
    shard = _shard()
    before = _cache(tmp_path / "before")
    old_s, old_wait = _timed(lambda: _bytes_then_write(before, shard))
    cache = _cache(tmp_path / "now")
    new_s, new_wait = benchmark.pedantic(_timed, args=(lambda: cache.write_shard(shard),),
                                         rounds=1, iterations=1)
    assert len(cache.index()) == CLIPS  # every clip readable from the shards written
    benchmark.extra_info.update(baseline_s=old_s, write_shard_s=new_s, speedup=old_s / new_s,
                                baseline_longest_gil_wait_ms=1e3 * old_wait,
                                longest_gil_wait_ms=1e3 * new_wait)
    print(f"\none {CLIPS}-clip MERT-95M shard ({CLIPS * LAYERS * FRAMES * DIM * 2 / 1e6:.0f} MB): "
          f"write_shard {1e3 * new_s:.0f} ms, save to bytes + write {1e3 * old_s:.0f} ms, "
          f"x{old_s / new_s:.1f}; longest wait for the GIL beside it {1e3 * new_wait:.0f} ms "
          f"vs {1e3 * old_wait:.0f} ms")


def busy_python():
    """A thread running Python without a pause, as the thread that launches GPU work does: the
    writer then gets the GIL back only at the switch interval after each call that let it go."""
    def spin(stop: threading.Event) -> None:
        while not stop.is_set():
            pass

    return _running(spin)


def test_writer_without_the_host_scan_beside_busy_python(benchmark, tmp_path):
    """The writer thread's time per shard while another thread runs Python: writing the clips
    the device found finite (``extract._write_shard``) against scanning every array first."""
    shard = _shard()
    before, now = _cache(tmp_path / "before"), _cache(tmp_path / "now")
    with busy_python():
        old_s, _ = _timed(lambda: scan_then_write(before, shard))
        new_s, _ = benchmark.pedantic(_timed, args=(lambda: _write_shard(now, shard),),
                                      rounds=1, iterations=1)
    assert len(now.index()) == len(before.index()) == CLIPS
    benchmark.extra_info.update(baseline_s=old_s, write_s=new_s, speedup=old_s / new_s)
    print(f"\nthe writer beside a busy Python thread, one {CLIPS}-clip MERT-95M shard: "
          f"{1e3 * new_s:.0f} ms without the host scan, {1e3 * old_s:.0f} ms with it, "
          f"x{old_s / new_s:.1f}")
