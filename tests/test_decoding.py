"""The decode threads' read-ahead: how far ahead they run (clips, and bytes of decoded audio,
which is pinned on CUDA), that they never run further, and the timing line's pinned-memory
report. All on the CPU."""

from __future__ import annotations

import threading
import time

import torch

import embench.decoding as decoding
import embench.extract as extract_module
from embench import Clip, ClipSet
from embench.decoding import (
    READ_AHEAD_BYTES,
    decoded_clips,
    pinned_growth,
    pinned_stats,
    read_ahead_clips,
    use_host_register,
)
from embench.extract import extract
from tests.fakes import SpectralEncoder, ToneTask, write_tone_dataset

CPU = torch.device("cpu")
SECONDS_30_AT = {24_000: 30 * 24_000 * 4, 48_000: 30 * 48_000 * 4}  # float32 bytes per clip


def test_read_ahead_is_two_groups_within_the_byte_budget():
    # MERT-95M on CUDA: groups of 4 x 256 five-second windows = 171 clips of 30 s at 24 kHz
    # (2.9 MB each): two groups are 1 GB, within budget, as before.
    assert read_ahead_clips(171, SECONDS_30_AT[24_000], threads=15) == 342
    # CLAP: 4 x 256 ten-second windows = 342 clips of 30 s at 48 kHz (5.8 MB each): two groups
    # would be 3.9 GB, so the budget decides, and it still covers one group.
    clap = read_ahead_clips(342, SECONDS_30_AT[48_000], threads=15)
    assert clap == READ_AHEAD_BYTES // SECONDS_30_AT[48_000]
    assert 342 <= clap < 2 * 342 and clap * SECONDS_30_AT[48_000] <= READ_AHEAD_BYTES


def test_read_ahead_never_drops_below_one_group_or_two_clips_per_thread():
    assert read_ahead_clips(100, 10**9, threads=4, budget=1) == 100
    assert read_ahead_clips(3, 10**9, threads=8, budget=1) == 16
    assert read_ahead_clips(3, 0, threads=1) == 6  # nothing known yet: two groups


def test_the_budget_is_read_when_called(monkeypatch):
    monkeypatch.setattr(decoding, "READ_AHEAD_BYTES", 150 * 1000)
    assert read_ahead_clips(100, 1000, threads=1) == 150


def test_decode_threads_never_run_further_ahead_than_asked(monkeypatch, tmp_path):
    clips = list(ToneTask(corrupt=False).load(tmp_path))
    order = {c.id: i for i, c in enumerate(clips)}
    leads: list[int] = []  # clip index minus clips consumed, when its decoding began
    consumed = [0]
    lock = threading.Lock()
    real = decoding.decode_clip

    def decode(clip, sample_rate, pin):
        with lock:
            leads.append(order[clip.id] - consumed[0])
        return real(clip, sample_rate, pin)

    monkeypatch.setattr(decoding, "decode_clip", decode)
    ids = []
    for clip_id, audio, error in decoded_clips(clips, 16000, threads=1, cuda=False,
                                               ahead=lambda: 5):
        assert error is None and audio is not None
        ids.append(clip_id)
        time.sleep(0.01)  # a slow consumer: the thread runs as far ahead as it may
        with lock:
            consumed[0] += 1
    assert ids == [c.id for c in clips]
    # clip i is submitted while fewer than 5 clips wait for the consumer: at most 4 ahead
    assert 3 <= max(leads) <= 4


def test_extract_sizes_the_read_ahead_from_the_first_clips_bytes(monkeypatch, tmp_path):
    calls = []
    real = extract_module.read_ahead_clips

    def spy(group_clips, clip_bytes, threads, budget=None):
        calls.append((group_clips, clip_bytes, threads))
        return real(group_clips, clip_bytes, threads, budget)

    monkeypatch.setattr(extract_module, "read_ahead_clips", spy)
    rows = write_tone_dataset(tmp_path / "data", per_class=25)  # more than the first read-ahead
    clips = ClipSet("test/tones", "many", [Clip(c, path, label, split)
                                            for c, path, label, split in rows])
    extract(SpectralEncoder(), clips, tmp_path / "cache", device=CPU, num_workers=2,
            batch_size=2, show_progress=False, log=lambda m: None)
    two_s_at_16k = 2 * 16000 * 4  # the tone clips: 2 s, float32 at the encoder's rate
    assert (8, two_s_at_16k, 2) in calls  # a group of 16 windows = 8 two-window clips


def test_pinned_growth_reports_new_blocks_their_size_and_time():
    before = {"num_host_alloc": 4.0, "allocated_bytes.current": 2.0**30,
              "host_alloc_time.total": 1e5}
    after = {"num_host_alloc": 516.0, "allocated_bytes.current": 5 * 2.0**30,
             "host_alloc_time.total": 2.6e6}
    assert pinned_growth(before, after) == ("pinned memory grew by 512 blocks (4.0 GiB, 2.5 s "
                                            "in cudaHostAlloc)")
    assert pinned_growth(before, after, registered=True).endswith("2.5 s in cudaHostRegister)")
    assert pinned_growth(after, after) is None
    assert pinned_growth({}, {}) is None  # a torch without the counters


def test_pinned_stats_are_empty_without_cuda():
    if not torch.cuda.is_available():
        assert pinned_stats() == {}


class _Settings:
    """A stand-in for torch's allocator-settings call on a CUDA machine."""

    def __init__(self, monkeypatch, blocks: float = 0.0, fails: bool = False) -> None:
        self.calls: list[str] = []
        self.fails = fails
        monkeypatch.setattr(decoding, "_host_register_set", False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", self, raising=False)
        monkeypatch.setattr(decoding, "pinned_stats", lambda: {"num_host_alloc": blocks})
        for var in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
            monkeypatch.delenv(var, raising=False)

    def __call__(self, conf: str) -> None:
        if self.fails:
            raise RuntimeError("Unrecognized key 'pinned_use_cuda_host_register'")
        self.calls.append(conf)


def test_the_pinned_pool_grows_by_cuda_host_register_once_per_process(monkeypatch):
    settings = _Settings(monkeypatch)
    assert use_host_register() and use_host_register()
    assert settings.calls == [decoding.HOST_REGISTER_SETTINGS]


def test_host_register_keeps_the_users_other_allocator_options(monkeypatch):
    settings = _Settings(monkeypatch)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert use_host_register()
    assert settings.calls == [f"expandable_segments:True,{decoding.HOST_REGISTER_SETTINGS}"]


def test_the_users_own_pinned_choice_stands(monkeypatch):
    settings = _Settings(monkeypatch)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "pinned_use_cuda_host_register:False")
    assert not use_host_register()
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "pinned_use_cuda_host_register: True")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    assert use_host_register()
    assert settings.calls == []


def test_no_switch_once_pinned_blocks_exist_or_where_torch_refuses(monkeypatch):
    """torch frees a block the way the setting says at free time: a block made by
    cudaHostAlloc must not be freed as a registered one."""
    settings = _Settings(monkeypatch, blocks=3.0)
    assert not use_host_register() and settings.calls == []
    refusing = _Settings(monkeypatch, fails=True)
    assert not use_host_register() and not decoding._host_register_set
    assert refusing.calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(decoding, "_host_register_set", False)
    assert not use_host_register()
