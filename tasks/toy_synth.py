"""Procedural, music-like clips for embench's offline toy tasks (``toy-genres``, ``toy-captions``).

Why synthesise: the default ``embench run`` must work with no network and no downloaded data, yet
exercise the whole pipeline on something that behaves like music. Each "genre" is a distribution
over tempo, drum pattern, oscillator timbre, brightness, playing style and harmony; every clip
draws its own exact BPM, key, tuning, level and noise, so classes overlap somewhat (shared drum
patterns, overlapping tempo and brightness ranges, random loudness) and cannot be told apart by
level alone.

Determinism: a clip is a pure function of ``(GENERATOR_VERSION, stream, index)``; its random
numbers come from ``numpy.random.default_rng(SeedSequence([GENERATOR_VERSION, stream, index]))``
and nothing else. ``stream`` separates datasets (toy-genres and toy-captions get different clips).
Change ``GENERATOR_VERSION`` whenever the audio of an existing (stream, index) changes.

Captions are built only from the parameters a listener could recover from the audio (genre style,
tempo, key, timbre, brightness, playing style, drums); even the template is chosen by a function
of those parameters, so every word of a caption is determined by the audio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import butter, sosfilt

GENERATOR_VERSION = 1
SAMPLE_RATE = 16_000
CLIP_SECONDS = 4.0
STEPS_PER_BEAT = 4  # drum patterns are 16-step bars of 4/4

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


@dataclass(frozen=True)
class DrumPattern:
    """One 16-step bar: ``x`` marks a hit. ``swing`` delays odd 16ths by that fraction of a step."""

    kick: str
    snare: str
    hat: str
    phrase: str
    open_hat: bool = False
    swing: float = 0.0


PATTERNS: dict[str, DrumPattern] = {
    "four-on-the-floor": DrumPattern(
        "x...x...x...x...", "....x.......x...", "..x...x...x...x.", "four-on-the-floor drums",
        open_hat=True,
    ),
    "backbeat": DrumPattern(
        "x.......x.x.....", "....x.......x...", "x.x.x.x.x.x.x.x.", "a straight backbeat"
    ),
    "boom-bap": DrumPattern(
        "x......x..x.....", "....x.......x...", "x.x.x.x.x.x.x.x.", "a swung boom-bap beat",
        swing=0.35,
    ),
    "breakbeat": DrumPattern(
        "x.........x.....", "....x.......x...", "xxxxxxxxxxxxxxxx", "a two-step breakbeat"
    ),
    "sparse": DrumPattern(
        "x...............", "................", "................", "a sparse kick drum"
    ),
    "none": DrumPattern("................", "................", "................", "no drums"),
}


@dataclass(frozen=True)
class Genre:
    """A class of the toy-genres task: distributions (``{value: probability}``) or ranges from
    which each clip draws its parameters."""

    name: str
    bpm: tuple[int, int]
    patterns: dict[str, float]
    oscillators: dict[str, float]
    cutoff_hz: tuple[float, float]
    styles: dict[str, float]
    minor_prob: float
    progressions: tuple[tuple[int, ...], ...]  # scale degrees (0 = tonic), one chord each
    chord_beats: int


GENRES: tuple[Genre, ...] = (
    Genre("house", (118, 130), {"four-on-the-floor": 0.85, "backbeat": 0.15},
          {"saw": 0.6, "square": 0.2, "fm": 0.2}, (900, 3000), {"pluck": 0.6, "pad": 0.4},
          0.7, ((0, 5, 2, 6), (0, 3)), 4),
    Genre("hip-hop", (78, 96), {"boom-bap": 0.85, "backbeat": 0.15},
          {"fm": 0.5, "sine": 0.3, "square": 0.2}, (500, 1600), {"pluck": 0.5, "pad": 0.5},
          0.8, ((0, 3), (0, 5, 3, 4)), 4),
    Genre("drum-and-bass", (160, 178), {"breakbeat": 0.9, "four-on-the-floor": 0.1},
          {"saw": 0.5, "square": 0.3, "fm": 0.2}, (600, 2500), {"pad": 0.5, "arpeggio": 0.5},
          0.85, ((0, 5), (0, 6, 5, 4)), 8),
    Genre("ambient", (60, 84), {"none": 0.6, "sparse": 0.4},
          {"sine": 0.6, "fm": 0.3, "saw": 0.1}, (400, 1300), {"pad": 0.9, "arpeggio": 0.1},
          0.4, ((0, 3), (0, 5, 3, 4)), 4),
    Genre("synth-pop", (104, 126), {"backbeat": 0.6, "four-on-the-floor": 0.4},
          {"square": 0.4, "saw": 0.4, "fm": 0.2}, (1500, 4500), {"arpeggio": 0.5, "pluck": 0.5},
          0.3, ((0, 4, 5, 3), (0, 3, 4, 4)), 4),
    Genre("chiptune", (136, 160), {"four-on-the-floor": 0.4, "backbeat": 0.4, "breakbeat": 0.2},
          {"square": 0.8, "saw": 0.2}, (3000, 6500), {"arpeggio": 0.8, "pluck": 0.2},
          0.3, ((0, 3, 4, 0), (0, 5, 3, 4)), 2),
)

GENRE_NAMES: tuple[str, ...] = tuple(g.name for g in GENRES)


@dataclass(frozen=True)
class ClipParams:
    """Everything that determines one clip's audio (with the clip's rng) and its caption."""

    genre: str
    bpm: int
    root: int  # pitch class of the key, 0 = C
    mode: str
    progression: tuple[int, ...]
    chord_beats: int
    oscillator: str
    cutoff_hz: float
    style: str
    drums: str
    envelope_s: float  # pad attack or pluck/arpeggio decay time
    tuning_cents: float
    drum_gain: float
    level_db: float  # peak level in dBFS before noise
    noise_db: float  # white-noise level relative to the peak

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.root]} {self.mode}"

    def as_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, dist: dict[str, float]) -> str:
    keys = list(dist)
    p = np.asarray([dist[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def sample_params(rng: np.random.Generator, genre: Genre) -> ClipParams:
    """Draw one clip's parameters from its genre's distributions plus genre-free variation."""
    style = _pick(rng, genre.styles)
    lo, hi = genre.cutoff_hz
    return ClipParams(
        genre=genre.name,
        bpm=int(rng.integers(genre.bpm[0], genre.bpm[1] + 1)),
        root=int(rng.integers(0, 12)),
        mode="minor" if rng.random() < genre.minor_prob else "major",
        progression=genre.progressions[int(rng.integers(len(genre.progressions)))],
        chord_beats=genre.chord_beats,
        oscillator=_pick(rng, genre.oscillators),
        cutoff_hz=round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 1),
        style=style,
        drums=_pick(rng, genre.patterns),
        envelope_s=round(float(rng.uniform(*((0.08, 0.35) if style == "pad" else (0.1, 0.3)))), 3),
        tuning_cents=round(float(rng.uniform(-15, 15)), 2),
        drum_gain=round(float(rng.uniform(0.5, 1.1)), 3),
        level_db=round(float(rng.uniform(-20.0, -3.0)), 2),
        noise_db=round(float(rng.uniform(-50.0, -35.0)), 2),
    )


# -- rendering ---------------------------------------------------------------------------------
def _midi_hz(midi: float | np.ndarray, cents: float) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi) - 69 + cents / 100.0) / 12.0)


def _oscillator(kind: str, hz: float, n: int, brightness: float) -> np.ndarray:
    """Naive (not band-limited) waveforms; the bus low-pass tames aliasing well enough for a toy."""
    phase = hz * np.arange(n) / SAMPLE_RATE
    if kind == "sine":
        return np.sin(2 * np.pi * phase)
    if kind == "saw":
        return 2.0 * (phase % 1.0) - 1.0
    if kind == "square":
        return np.where(phase % 1.0 < 0.5, 1.0, -1.0)
    if kind == "fm":  # 1:1 FM; the modulation index follows brightness, like a filter would
        index = 0.5 + 4.0 * brightness
        return np.sin(2 * np.pi * phase + index * np.sin(2 * np.pi * phase))
    raise ValueError(f"unknown oscillator {kind!r}")


def _chord(p: ClipParams, degree: int) -> list[int]:
    """Diatonic triad on ``degree`` of the clip's key, voiced around middle C."""
    scale = SCALES[p.mode]
    base = 60 + p.root - (12 if p.root >= 6 else 0)
    return [base + scale[d % 7] + 12 * (d // 7) for d in (degree, degree + 2, degree + 4)]


def _note_events(p: ClipParams, duration: float) -> list[tuple[float, float, int, float]]:
    """``(start_s, length_s, midi, velocity)`` for the harmonic part."""
    beat = 60.0 / p.bpm
    chord_len = p.chord_beats * beat
    events: list[tuple[float, float, int, float]] = []
    for ci in range(math.ceil(duration / chord_len)):
        notes = _chord(p, p.progression[ci % len(p.progression)])
        t0 = ci * chord_len
        if p.style == "pad":
            events += [(t0, chord_len, m, 0.6) for m in notes]
        elif p.style == "pluck":
            for b in range(p.chord_beats):
                events += [(t0 + b * beat, beat, m, 0.8) for m in notes]
        else:  # arpeggio: 16ths below 130 BPM, 8ths above, cycling up and down the triad
            per_beat = 4 if p.bpm < 130 else 2
            cycle = [notes[0], notes[1], notes[2], notes[0] + 12, notes[2], notes[1]]
            step = beat / per_beat
            for k in range(p.chord_beats * per_beat):
                events.append((t0 + k * step, step, cycle[k % len(cycle)], 1.0))
    return [e for e in events if e[0] < duration]


def _render_harmony(p: ClipParams, n: int) -> np.ndarray:
    sr = SAMPLE_RATE
    duration = n / sr
    brightness = (math.log(p.cutoff_hz) - math.log(400)) / (math.log(6500) - math.log(400))
    bus = np.zeros(n)
    for start, length, midi, vel in _note_events(p, duration):
        i0 = int(round(start * sr))
        m = min(int(round(length * sr)), n - i0)
        if m <= 0:
            continue
        t = np.arange(m) / sr
        if p.style == "pad":
            env = np.minimum(1.0, t / p.envelope_s) * np.exp(-t / 3.0)
        else:
            env = np.minimum(1.0, t / 0.005) * np.exp(-t / p.envelope_s)
        env *= np.minimum(1.0, (m - np.arange(m)) / (0.01 * sr))  # 10 ms fade: no clicks
        hz = float(_midi_hz(midi, p.tuning_cents))
        bus[i0 : i0 + m] += vel * env * _oscillator(p.oscillator, hz, m, brightness)
    bus = sosfilt(butter(2, p.cutoff_hz, fs=sr, output="sos"), bus)

    # bass: the chord root two octaves down, a sine with a little square for presence
    beat = 60.0 / p.bpm
    chord_len = p.chord_beats * beat
    bass = np.zeros(n)
    for ci in range(math.ceil(duration / chord_len)):
        i0 = int(round(ci * chord_len * sr))
        m = min(int(round(chord_len * sr)), n - i0)
        if m <= 0:
            continue
        root = _chord(p, p.progression[ci % len(p.progression)])[0] - 24
        hz = float(_midi_hz(root, p.tuning_cents))
        t = np.arange(m) / sr
        env = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (m - np.arange(m)) / (0.01 * sr))
        bass[i0 : i0 + m] = env * (
            _oscillator("sine", hz, m, 0) + 0.2 * _oscillator("square", hz, m, 0)
        )
    bass = sosfilt(butter(2, 500, fs=sr, output="sos"), bass)
    return _unit_rms(bus) + 0.5 * _unit_rms(bass)


def _drum_shots(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One-shot samples for this clip (slightly varied per clip, like a different drum kit)."""
    sr = SAMPLE_RATE
    t = np.arange(int(0.35 * sr)) / sr
    kick_hz = rng.uniform(40, 55) + rng.uniform(60, 100) * np.exp(-t / 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(kick_hz) / sr) * np.exp(-t / rng.uniform(0.08, 0.16))
    noise = rng.standard_normal(t.size)
    bright = np.diff(noise, prepend=0.0)  # first difference: a crude high-pass
    snare = 0.7 * bright * np.exp(-t / rng.uniform(0.06, 0.1)) + 0.5 * np.sin(
        2 * np.pi * rng.uniform(170, 220) * t
    ) * np.exp(-t / 0.04)
    hat = np.diff(bright, prepend=0.0) / 2.0
    return {
        "kick": kick,
        "snare": snare,
        "hat": 0.35 * hat * np.exp(-t / 0.02),
        "open_hat": 0.3 * hat * np.exp(-t / 0.12),
    }


def _render_drums(p: ClipParams, rng: np.random.Generator, n: int) -> np.ndarray:
    pattern = PATTERNS[p.drums]
    shots = _drum_shots(rng)
    step = 60.0 / p.bpm / STEPS_PER_BEAT
    n_steps = math.ceil(n / SAMPLE_RATE / step)
    velocity = rng.uniform(0.75, 1.0, size=(3, n_steps))  # humanised dynamics
    out = np.zeros(n)
    for row, (name, steps) in enumerate(
        (("kick", pattern.kick), ("snare", pattern.snare), ("hat", pattern.hat))
    ):
        if "x" not in steps:
            continue
        shot = shots["open_hat" if name == "hat" and pattern.open_hat else name]
        for k in range(n_steps):  # at most a few dozen hits: slice-adds beat an FFT convolution
            if steps[k % len(steps)] == "x":
                i = int(round((k + (pattern.swing if k % 2 else 0.0)) * step * SAMPLE_RATE))
                if i < n:
                    m = min(shot.size, n - i)
                    out[i : i + m] += velocity[row, k] * shot[:m]
    return out


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 0 else x


def render(p: ClipParams, rng: np.random.Generator, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """The clip's float32 mono audio in [-1, 1] at :data:`SAMPLE_RATE`."""
    n = int(round(seconds * SAMPLE_RATE))
    mix = _render_harmony(p, n)
    if p.drums != "none":
        mix = mix + p.drum_gain * _unit_rms(_render_drums(p, rng, n))
    peak = float(np.max(np.abs(mix))) or 1.0
    level = 10.0 ** (p.level_db / 20.0)
    mix = mix * (level / peak)
    mix = mix + level * 10.0 ** (p.noise_db / 20.0) * rng.standard_normal(n)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def clip_rng(stream: int, index: int) -> np.random.Generator:
    """The only source of randomness for clip ``index`` of dataset ``stream``."""
    return np.random.default_rng(np.random.SeedSequence([GENERATOR_VERSION, stream, index]))


def generate_clip(stream: int, index: int) -> tuple[np.ndarray, ClipParams]:
    """Clip ``index`` of dataset ``stream``; genres cycle with the index (balanced classes)."""
    rng = clip_rng(stream, index)
    params = sample_params(rng, GENRES[index % len(GENRES)])
    return render(params, rng), params


# -- captions ----------------------------------------------------------------------------------
def tempo_word(bpm: int) -> str:
    if bpm < 90:
        return "slow"
    if bpm < 120:
        return "mid-tempo"
    return "fast" if bpm < 150 else "very fast"


def timbre_words(p: ClipParams) -> str:
    """Brightness adjective + oscillator noun (a low-passed sine has no brightness to speak of)."""
    noun = {"sine": "sine", "saw": "sawtooth", "square": "square-wave", "fm": "FM"}[p.oscillator]
    if p.oscillator == "sine":
        return f"pure {noun}"
    adjective = "dark" if p.cutoff_hz < 1000 else "warm" if p.cutoff_hz < 2500 else "bright"
    return f"{adjective} {noun}"


_TEMPLATES = (
    "A {tempo} {genre} track at {bpm} BPM in {key} with a {timbre} {style} and {drums}.",
    "{Genre} in {key} at {bpm} BPM: {tempo}, with {drums} under a {timbre} {style}.",
    "A {timbre} {style} leads this {tempo} {genre} tune in {key}, {bpm} BPM, with {drums}.",
    "{Tempo} {genre} with {drums}, a {timbre} {style}, {key}, {bpm} BPM.",
)


def caption(p: ClipParams) -> str:
    """A one-sentence description of ``p``; the template is a function of the parameters too."""
    fields = {
        "tempo": tempo_word(p.bpm),
        "genre": p.genre,
        "bpm": p.bpm,
        "key": p.key,
        "timbre": timbre_words(p),
        "style": p.style,
        "drums": PATTERNS[p.drums].phrase,
    }
    fields["Tempo"] = str(fields["tempo"]).capitalize()
    fields["Genre"] = p.genre.capitalize()
    template = _TEMPLATES[(p.bpm + p.root) % len(_TEMPLATES)]
    return template.format(**fields)
