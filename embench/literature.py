"""Scores reported in the literature: typed records, each with its source, protocol and split.

These rows are *reported, not measured*: embench never ran them. They are shown on the published
leaderboard so a new measured row can be read against what papers found, and every figure here
is copied from its source as given (see ``/work/shared/FACTS.md`` in the project history); none
is derived, rounded differently or filled in. A setting sits beside embench's measured rows only
when ``beside_measured`` says that its task, protocol and split are the ones embench measures;
all others get a table of their own, because numbers from different protocols or splits are not
comparable.

To add a row: append to a setting's rows (or add a setting) in a pull request that names the
table or page of the source; ``tests/test_literature.py`` pins every figure.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LITERATURE", "ReportedRow", "Setting", "Source", "reported_rows"]


@dataclass(frozen=True)
class Source:
    """Where a number was published: a citation a reader can find, and where in it."""

    short: str
    citation: str
    where: str
    url: str | None = None


@dataclass(frozen=True)
class Setting:
    """One table of one source: every number in it was measured the same way.

    ``protocol`` and ``split_id`` are embench's ids only where the source used exactly that
    protocol and split (then ``beside_measured`` is True); otherwise they are ids of their own,
    so they can never be grouped with a measured table by accident."""

    key: str
    title: str
    task: str
    dataset_id: str
    protocol: str
    protocol_text: str
    split_id: str
    split_text: str
    main_score: str
    higher_is_better: bool
    source: Source
    beside_measured: bool
    rows: tuple[ReportedRow, ...]


@dataclass(frozen=True)
class ReportedRow:
    """One model's reported scores, each as the text its source prints ("84.00" stays
    "84.00"). ``model`` is the name the source uses; ``encoder`` is the embench encoder with the
    same checkpoint, when there is one."""

    model: str
    encoder: str | None
    scores: tuple[tuple[str, str], ...]

    def text(self, name: str) -> str:
        return dict(self.scores)[name]

    def value(self, name: str) -> float:
        return float(self.text(name))


def _acc(model: str, encoder: str | None, accuracy: str) -> ReportedRow:
    return ReportedRow(model, encoder, (("accuracy", accuracy),))


MARBLE = Source(
    short="MARBLE (Yuan et al. 2023)",
    citation="R. Yuan et al. MARBLE: Music Audio Representation Benchmark for Universal "
    "Evaluation. NeurIPS 2023 Datasets and Benchmarks Track (arXiv:2306.10548)",
    where="Table 3, GTZAN genre accuracy",
    url="https://arxiv.org/abs/2306.10548",
)
SEED = Source(
    short="seed project",
    citation="The seed project embench grew out of (its own reported test accuracies)",
    where="its results table; one run each",
)
LP_MUSICCAPS = Source(
    short="LP-MusicCaps (Doh et al. 2023)",
    citation="S. Doh, K. Choi, J. Lee and J. Nam. LP-MusicCaps: LLM-Based Pseudo Music "
    "Captioning. ISMIR 2023 (arXiv:2307.16372)",
    where="the supervised captioning model's MusicCaps test scores (x100)",
    url="https://arxiv.org/abs/2307.16372",
)

_SEED_SPLIT = (
    "the seed project's own random 80/20 split of GTZAN (not embench's gtzan-random-80-20-seed0, "
    "whose draw differs), first 3 s of each clip"
)


def _seed_setting(frozen: bool, mert: str, wav2vec2: str, clap: str) -> Setting:
    """The seed project's frozen and fine-tuned tables: one split and recipe, two protocols."""
    how = "frozen encoder" if frozen else "encoder fine-tuned"
    return Setting(
        key=f"seed-gtzan-{'frozen' if frozen else 'finetuned'}",
        title=f"GTZAN, the seed project's split and 3 s crops, "
              f"{'frozen' if frozen else 'fine-tuned'} encoder",
        task="gtzan",
        dataset_id="gtzan",
        protocol=f"seed-{'frozen' if frozen else 'finetune'}-last-layer",
        protocol_text=f"{how}, classifier on the last hidden layer, mean over time; 10 epochs, "
                      "lr 1e-5, one run",
        split_id="seed-random-80-20-first-3s",
        split_text=_SEED_SPLIT,
        main_score="accuracy",
        higher_is_better=True,
        source=SEED,
        beside_measured=False,
        rows=(
            _acc("MERT-330M", "mert-v1-330m", mert),
            _acc("wav2vec2-base", "wav2vec2-base", wav2vec2),
            _acc("CLAP (larger_clap_music)", "clap-music", clap),
        ),
    )


LITERATURE: tuple[Setting, ...] = (
    Setting(
        key="marble-gtzan-fault-filtered",
        title="GTZAN, fault-filtered split, frozen probe (MARBLE)",
        task="gtzan",
        dataset_id="gtzan",
        protocol="probe",
        protocol_text=(
            "MARBLE's frozen MLP probe (512 hidden, dropout 0.2, Adam, batch 64, early stopping; "
            "learning rate from {5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2} and every layer or a "
            "weighted sum, chosen on validation). embench's probe follows it with a two-point "
            "learning-rate grid, so these rows are shown beside measured ones but not ranked."
        ),
        split_id="gtzan-fault-filtered",
        split_text="fault-filtered split (Kereliuk, Sturm & Larsen 2015): 443 / 197 / 290",
        main_score="accuracy",
        higher_is_better=True,
        source=MARBLE,
        beside_measured=True,
        rows=(
            _acc("MERT-v1-95M", "mert-v1-95m", "74.8"),
            _acc("MERT-v1-330M", "mert-v1-330m", "77.6"),
            _acc("MusiCNN", None, "73.5"),
            _acc("CLMR", None, "65.2"),
            _acc("Jukebox-5B", None, "77.9"),
            _acc("MULE", None, "75.5"),
            _acc("Music2Vec", None, "74.1"),
        ),
    ),
    _seed_setting(frozen=True, mert="66.50", wav2vec2="43.50", clap="36.63"),
    _seed_setting(frozen=False, mert="84.00", wav2vec2="67.50", clap="43.00"),
    Setting(
        key="lp-musiccaps-supervised",
        title="MusicCaps captioning, supervised model (LP-MusicCaps)",
        task="musiccaps",
        dataset_id="google/MusicCaps",
        protocol="lp-musiccaps-supervised",
        protocol_text=(
            "the paper's own captioning model trained end to end on MusicCaps (not a probe of a "
            "frozen encoder); metric implementations are the paper's, e.g. its METEOR is not "
            "embench's nltk METEOR"
        ),
        split_id="musiccaps-lp-musiccaps",
        split_text="MusicCaps test as the paper used it",
        main_score="bleu4",
        higher_is_better=True,
        source=LP_MUSICCAPS,
        beside_measured=False,
        rows=(
            ReportedRow(
                "Supervised captioner (LP-MusicCaps paper)",
                None,
                (("bleu4", "4.8"), ("bleu1", "28.5"), ("meteor", "20.6"), ("rouge_l", "19.2"),
                 ("bertscore", "87.1")),
            ),
        ),
    ),
)


def reported_rows() -> list[tuple[Setting, ReportedRow]]:
    """Every reported row with its setting (source, protocol, split), in source order."""
    return [(setting, row) for setting in LITERATURE for row in setting.rows]
