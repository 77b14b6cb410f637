"""Small in-process plugins for tests: a deterministic encoder and a classification task over
generated WAV files. Written against the public API only, like a third-party plugin."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from embench import (
    Clip,
    ClipSet,
    Encoder,
    EncoderInfo,
    EvalContext,
    Evaluation,
    Task,
    TaskInfo,
    hookimpl,
)


class SpectralEncoder(Encoder):
    """Two layers of band energies from an FFT over 1600-sample frames (10 Hz at 16 kHz)."""

    info = EncoderInfo(name="fake-spectral", sample_rate=16000, num_layers=2, dims=(8,),
                       frame_rate=10.0, window_s=1.0, hop_s=1.0, min_samples=1600,
                       description="test encoder")

    def __init__(self, delay_s: float = 0.0):
        super().__init__()
        self.delay_s = delay_s
        self.load_calls = 0

    def load(self, device, weights="pretrained", weights_path=None):
        self.load_calls += 1
        self.device, self.weights = torch.device(device), weights

    def forward(self, waveforms):
        if self.delay_s:
            time.sleep(self.delay_s)
        frames = waveforms.unfold(1, 1600, 1600)  # [B, F, 1600]
        spec = torch.fft.rfft(frames).abs()[..., 1:801]
        bands = spec.reshape(*spec.shape[:2], 8, 100).mean(-1).log1p()
        return torch.stack([bands, bands.pow(2)], dim=1)  # [B, 2, F, 8]


def write_tone_dataset(root: Path, per_class: int = 6, seconds: float = 2.0,
                       sr: int = 22050) -> list[tuple[str, Path, str, str]]:
    """Two classes of tones (low / high), written as WAV at 22.05 kHz so resampling is exercised.
    Returns (clip id, path, label, split) rows."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for label, base in (("low", 300.0), ("high", 3000.0)):
        for i in range(per_class):
            freq = base * (1 + 0.1 * rng.random())
            audio = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
            path = root / f"{label}{i}.wav"
            sf.write(path, audio.astype(np.float32), sr)
            split = ("train", "train", "train", "valid", "test", "test")[i % 6]
            rows.append((f"{label}{i}", path, label, split))
    return rows


class ToneTask(Task):
    """Nearest-centroid classification on layer 0 clip means: cheap, deterministic."""

    info = TaskInfo(name="fake-tones", dataset_id="test/tones", main_score="accuracy",
                    protocols=("centroid",), requires_features=("centroid",),
                    description="test task")

    def __init__(self, corrupt: bool = True):
        self.corrupt = corrupt

    def load(self, data_dir: Path) -> ClipSet:
        root = Path(data_dir) / "tones"
        rows = write_tone_dataset(root)
        clips = [Clip(cid, path, label, split) for cid, path, label, split in rows]
        if self.corrupt:
            bad = root / "broken.wav"
            bad.write_bytes(b"not a RIFF file at all")
            clips.append(Clip("broken", bad, "low", "train"))
        return ClipSet("test/tones", "tones-fixed", clips, labels=("low", "high"))

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        feats = ctx.features
        by_id = {c.id: c for c in ctx.clips}
        ids = feats.clip_ids
        x = feats.clip_means(0, ids)
        labels = np.array([by_id[i].target for i in ids])
        split = np.array([by_id[i].split for i in ids])
        cents = {lab: x[(labels == lab) & (split == "train")].mean(0) for lab in ("low", "high")}
        test = split == "test"
        pred = np.array([min(cents, key=lambda k: np.linalg.norm(v - cents[k])) for v in x[test]])
        acc = float((pred == labels[test]).mean() * 100)
        return Evaluation(scores={"accuracy": [acc] * len(ctx.seeds)},
                          baselines={"chance": 50.0}, details={"n_test": int(test.sum())})


class FakePlugin:
    """A plugin object registering one encoder and one task."""

    def __init__(self, encoder: Encoder | None = None, task: Task | None = None):
        self.encoder = encoder or SpectralEncoder()
        self.task = task or ToneTask()

    @hookimpl
    def register_encoders(self, register):
        register(self.encoder)

    @hookimpl
    def register_tasks(self, register):
        register(self.task)
