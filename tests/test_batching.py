"""Batch sizes: 'auto', halving on out-of-memory, padding for compiled shapes, --compile, and
decode threads that keep order. All on the CPU with a deterministic fake encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embench.batching import BatchSizer
from embench.extract import (
    BATCHES_PER_GROUP_CUDA,
    MIN_GROUP_WINDOWS,
    embed_group,
    embed_waveforms,
    extract,
    group_windows_target,
)
from tests.fakes import SpectralEncoder, ToneTask
from tests.helpers_cli import run_main

CPU = torch.device("cpu")


def _waves(n: int = 5, seconds: float = 3.0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(int(seconds * 16000), generator=gen) for _ in range(n)]


class OutOfMemoryAbove(SpectralEncoder):
    """Raises CUDA's out-of-memory error for batches larger than ``limit`` windows."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.sizes = limit, []

    def forward(self, waveforms):
        self.sizes.append(len(waveforms))
        if len(waveforms) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(waveforms)


def test_auto_on_the_cpu_is_about_128k_samples_and_sizes_are_validated():
    assert BatchSizer("auto", CPU).resolve(lambda x: x, 64_000) == 2  # 4 s at 16 kHz
    assert BatchSizer("auto", CPU).resolve(lambda x: x, 120_000) == 1  # a 5 s MERT window
    assert BatchSizer("auto", CPU).resolve(lambda x: x, 480_000) == 1
    assert BatchSizer(5, CPU).resolve(lambda x: x, 16000) == 5
    for bad in (0, -1, "big"):
        with pytest.raises(Exception, match="positive integer or 'auto'"):
            BatchSizer(bad, CPU)


def test_out_of_memory_halves_the_batch_and_results_do_not_change():
    waves = _waves()  # 5 clips x 3 one-second windows = 15 windows
    reference = SpectralEncoder()
    reference.load(CPU)
    expected = embed_waveforms(reference, waves, 1.0, batch_size=1)
    flaky = OutOfMemoryAbove(limit=4)
    flaky.load(CPU)
    messages = []
    sizer = BatchSizer(16, CPU, log=messages.append)
    got = [[a.numpy() for a in clip] for clip in embed_group(flaky, waves, 1.0, sizer).wait()]
    assert sizer.size == 4 and flaky.sizes[:3] == [15, 8, 4]
    assert "retrying with batch size 8" in messages[0]
    for a, b in zip(got, expected, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-3)


def test_out_of_memory_at_batch_one_is_raised():
    enc = OutOfMemoryAbove(limit=0)
    enc.load(CPU)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        embed_group(enc, _waves(1), 1.0, BatchSizer(2, CPU, log=lambda m: None))


def test_partial_cuda_batches_are_padded_to_eight_shapes():
    cuda = torch.device("cuda")
    sizer = BatchSizer(64, cuda)
    assert [sizer.padded(n) for n in (1, 8, 9, 63, 64)] == [8, 8, 16, 64, 64]
    assert {sizer.padded(n) for n in range(1, 65)} == {8, 16, 24, 32, 40, 48, 56, 64}
    assert BatchSizer(64, cuda, pad=False).padded(9) == 9
    assert BatchSizer(64, CPU).padded(9) == 9  # the CPU runs exact shapes


class PaddedOnCPU(BatchSizer):
    """A CPU stand-in for CUDA's padding, to check padded rows never reach the results."""

    def padded(self, n: int) -> int:
        return self.size


def test_first_cuda_group_is_one_batch_so_the_gpu_starts_early():
    assert group_windows_target(256, cuda=True, first=True) == 256
    assert group_windows_target(256, cuda=True, first=False) == 256 * BATCHES_PER_GROUP_CUDA
    assert group_windows_target(256, cuda=False, first=False) == 256
    assert group_windows_target(1, cuda=False, first=True) == MIN_GROUP_WINDOWS


def test_padding_rows_do_not_change_results():
    waves = _waves(3)  # 9 windows: batches of 4, 4 and 1 padded to 4
    enc = SpectralEncoder()
    enc.load(CPU)
    exact = embed_group(enc, waves, 1.0, BatchSizer(4, CPU)).wait()
    padded = embed_group(enc, waves, 1.0, PaddedOnCPU(4, CPU)).wait()
    for a, b in zip(exact, padded, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y)


def test_compile_wraps_the_forward_and_changes_no_result(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    clips = ToneTask().load(tmp_path / "data")
    plain = extract(SpectralEncoder(), clips, tmp_path / "a", device=CPU, num_workers=0,
                    show_progress=False, log=lambda m: None)
    fast = extract(SpectralEncoder(), clips, tmp_path / "b", device=CPU, num_workers=0,
                   compile=True, show_progress=False, log=lambda m: None)
    assert compiled == [{"dynamic": False}]
    for a, b in zip(plain.frames(1), fast.frames(1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_decode_threads_keep_clip_order_and_match_inline_decoding(tmp_path):
    clips = ToneTask(corrupt=True).load(tmp_path / "data")
    inline = extract(SpectralEncoder(), clips, tmp_path / "a", device=CPU, num_workers=0,
                     show_progress=False, log=lambda m: None)
    threaded = extract(SpectralEncoder(), clips, tmp_path / "b", device=CPU, num_workers=3,
                       batch_size=2, show_progress=False, log=lambda m: None)
    assert threaded.clip_ids == inline.clip_ids and threaded.skipped == inline.skipped
    for a, b in zip(inline.frames(0), threaded.frames(0), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cli_batch_size_takes_auto_or_a_positive_number(capsys):
    assert run_main(["run", "--batch-size", "0", "--encoders", "melspec"]) == 2
    assert "positive number of windows, or auto" in capsys.readouterr().err
