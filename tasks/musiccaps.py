"""MusicCaps music captioning (Agostinelli et al. 2023): 5,521 ten-second YouTube excerpts, each
with one expert caption.

Only the metadata is public; the audio must be fetched from YouTube (``embench data musiccaps
--download``) and many videos are gone, so every clip the CSV names but the copy lacks is listed
in ``ClipSet.missing`` with its reason: scores on a partial copy are on fewer clips, never on
silently different ones. Where files go and which names are understood: :mod:`musiccaps_layouts`.

Split (``musiccaps-audioset-eval-seed0``): test = the 2,858 rows with ``is_audioset_eval`` True
(the standard MusicCaps test set, as in LP-MusicCaps), train = the other 2,663, of which a seeded
10% (266 clips, seed 0) is held out as valid for model selection. Clip ids are ytids, targets the
caption strings.

Protocols: ``frozen`` (a captioner trained on cached embeddings, :mod:`embench.captioning`) and
``finetune`` (the encoder trained together with the captioner,
:mod:`embench.finetune_captioning`). The main score is corpus BLEU-4: it has an exact,
dependency-light reference implementation (sacrebleu), whereas METEOR depends on WordNet data
and on which METEOR variant is meant.
"""

from __future__ import annotations

from pathlib import Path

from embench import (
    Clip,
    ClipSet,
    EmbenchError,
    EvalContext,
    Evaluation,
    MissingDataError,
    Task,
    TaskInfo,
    hookimpl,
)

from .musiccaps_layouts import (
    DATA_SUBDIR,
    VALID_FRACTION,
    assign_splits,
    audio_dirs,
    csv_path,
    find_audio,
    read_metadata,
)

DATASET_ID = "google/MusicCaps"
PROTOCOLS = ("frozen", "finetune")
MISSING_REASON = "no audio file for this ytid (video unavailable or not downloaded)"
CITATION = (
    "A. Agostinelli, T. I. Denk, Z. Borsos, J. Engel, M. Verzetti, A. Caillon, Q. Huang, "
    "A. Jansen, A. Roberts, M. Tagliasacchi, M. Sharifi, N. Zeghidour and C. Frank. MusicLM: "
    "Generating Music From Text. arXiv:2301.11325, 2023."
)


def missing_message(data_dir: Path) -> str:
    """The error text when no MusicCaps audio is on disk: where it goes and how to get it."""
    folders = " or ".join(str(d) for d in audio_dirs(data_dir))
    return (
        f"No MusicCaps audio found in {folders}.\n"
        f"Only MusicCaps' metadata is public; the audio comes from YouTube. Fetch it with:\n"
        f"  pip install 'embench[download]'   (yt-dlp; ffmpeg must be on PATH)\n"
        f"  embench data musiccaps --download --data-dir {data_dir}\n"
        f"Or put 10 s excerpts named <ytid>.flac (.wav/.ogg/.mp3 work too) in "
        f"{Path(data_dir) / DATA_SUBDIR / 'audio'}/, or a Hugging Face parquet export with an "
        f"audio column under {Path(data_dir) / DATA_SUBDIR}/. Many videos are no longer "
        f"available; missing clips are listed in the results. Run `embench data musiccaps` to "
        f"see how many are present."
    )


class MusicCaps(Task):
    """MusicCaps captioning on the AudioSet-eval split."""

    info = TaskInfo(
        name="musiccaps", dataset_id=DATASET_ID, main_score="bleu4", protocols=PROTOCOLS,
        description="Music captioning: 5,521 10-s YouTube excerpts with expert captions; test = "
                    "AudioSet eval (2,858), valid = 10% of the rest (seed 0). Audio must be "
                    "downloaded (`embench data musiccaps`); unavailable clips are reported.",
        version="1", requires_features=("frozen",), citation=CITATION,
        homepage="https://www.kaggle.com/datasets/googleai/musiccaps",
        license="CC BY-SA 4.0 (captions); audio: YouTube, owners' terms",
    )

    def __init__(self, seed: int = 0, valid_fraction: float = VALID_FRACTION):
        self.seed, self.valid_fraction = seed, valid_fraction
        self.split_id = f"musiccaps-audioset-eval-seed{seed}"

    def load(self, data_dir: Path) -> ClipSet:
        data_dir = Path(data_dir).expanduser()
        rows = read_metadata(csv_path(data_dir))
        found = find_audio(data_dir, rows)
        if not found:
            raise MissingDataError(missing_message(data_dir))
        splits = assign_splits(rows, self.seed, self.valid_fraction)
        clips, missing = [], []
        for row in rows:
            audio = found.get(row.ytid)
            if audio is None:
                missing.append((row.ytid, MISSING_REASON))
                continue
            clips.append(Clip(id=row.ytid, source=audio.source, split=splits[row.ytid],  # type: ignore[arg-type]
                              target=audio.caption or row.caption,
                              start_s=audio.start_s, end_s=audio.end_s))
        return ClipSet(dataset_id=DATASET_ID, split_id=self.split_id, clips=clips,
                       missing=missing)

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        if ctx.protocol == "frozen":
            from embench.captioning import evaluate_captioning

            return evaluate_captioning(ctx)
        if ctx.protocol == "finetune":
            from embench.finetune_captioning import finetune_captioning

            return finetune_captioning(ctx)
        raise EmbenchError(f"MusicCaps has no protocol {ctx.protocol!r}; choose one of "
                           f"{PROTOCOLS}.")


@hookimpl
def register_tasks(register):
    register(MusicCaps())
