"""Reported rows are copied from their sources, marked as reported, never ranked, and sit beside
measured rows only where protocol and split are embench's own."""

from __future__ import annotations

from embench.leaderboard_site import ResultFile, build_site
from embench.literature import LITERATURE, reported_rows
from embench.plugins import get_registry
from embench.safe_links import safe_url
from tests.leaderboard_fixtures import make_run, probe_result

# Every figure, exactly as FACTS.md gives it (the project's checked copy of the sources).
EXPECTED = {
    ("marble-gtzan-fault-filtered", "MERT-v1-95M", "accuracy"): "74.8",
    ("marble-gtzan-fault-filtered", "MERT-v1-330M", "accuracy"): "77.6",
    ("marble-gtzan-fault-filtered", "MusiCNN", "accuracy"): "73.5",
    ("marble-gtzan-fault-filtered", "CLMR", "accuracy"): "65.2",
    ("marble-gtzan-fault-filtered", "Jukebox-5B", "accuracy"): "77.9",
    ("marble-gtzan-fault-filtered", "MULE", "accuracy"): "75.5",
    ("marble-gtzan-fault-filtered", "Music2Vec", "accuracy"): "74.1",
    ("seed-gtzan-frozen", "MERT-330M", "accuracy"): "66.50",
    ("seed-gtzan-finetuned", "MERT-330M", "accuracy"): "84.00",
    ("seed-gtzan-frozen", "wav2vec2-base", "accuracy"): "43.50",
    ("seed-gtzan-finetuned", "wav2vec2-base", "accuracy"): "67.50",
    ("seed-gtzan-frozen", "CLAP (larger_clap_music)", "accuracy"): "36.63",
    ("seed-gtzan-finetuned", "CLAP (larger_clap_music)", "accuracy"): "43.00",
    **{("lp-musiccaps-supervised", "Supervised captioner (LP-MusicCaps paper)", metric): value
       for metric, value in [("bleu1", "28.5"), ("bleu4", "4.8"), ("meteor", "20.6"),
                             ("rouge_l", "19.2"), ("bertscore", "87.1")]},
}


def test_every_figure_is_the_published_one_and_nothing_else():
    found = {(s.key, row.model, metric): text
             for s, row in reported_rows() for metric, text in row.scores}
    assert found == EXPECTED


def test_every_setting_names_source_protocol_and_split():
    keys = [s.key for s in LITERATURE]
    assert len(set(keys)) == len(keys)
    for s in LITERATURE:
        assert s.source.citation and s.source.where and s.source.short
        assert s.protocol and s.protocol_text and s.split_id and s.split_text
        assert all(row.text(s.main_score) for row in s.rows)
        assert s.source.url is None or safe_url(s.source.url) == s.source.url
    assert {s.source.short for s in LITERATURE} == {
        "MARBLE (Yuan et al. 2023)", "seed project", "LP-MusicCaps (Doh et al. 2023)"}


def test_only_settings_that_match_embench_can_sit_beside_measured_rows():
    registry = get_registry()
    embench_splits = {"gtzan": "gtzan-fault-filtered"}
    for s in LITERATURE:
        if s.beside_measured:
            task = registry.tasks[s.task]
            assert s.protocol in task.info.protocols and s.dataset_id == task.info.dataset_id
            assert embench_splits[s.task] == s.split_id
        else:  # own ids, so no measured table can ever match them by accident
            assert s.split_id not in {"gtzan-fault-filtered", "gtzan-10fold-seed0",
                                      "gtzan-random-80-20-seed0", "musiccaps-audioset-eval-seed0"}
            assert s.protocol not in {p for t in registry.tasks.values() for p in t.info.protocols}
    assert [s.key for s in LITERATURE if s.beside_measured] == ["marble-gtzan-fault-filtered"]


def test_without_measured_rows_every_setting_has_its_own_table():
    site = build_site([])
    assert site.measured == [] and len(site.literature) == len(LITERATURE)
    for table in site.literature:
        assert all(row.reported and row.rank is None for row in table.rows)
        assert [r.mean for r in table.rows] == sorted((r.mean for r in table.rows), reverse=True)


def _gtzan(encoder: str, split_id: str, task: str = "gtzan"):
    return probe_result(encoder, (75.0, 74.0, 76.0), task=task, dataset_id="gtzan",
                        split_id=split_id)


def test_marble_rows_sit_beside_a_matching_measured_table_unranked():
    run = make_run([_gtzan("mert-v1-95m", "gtzan-fault-filtered"),
                    _gtzan("melspec", "gtzan-random-80-20-seed0", task="gtzan-random-80-20")])
    site = build_site([ResultFile("r.json", run)])
    by_split = {t.split_id: t for t in site.measured}
    beside = by_split["gtzan-fault-filtered"]
    assert [s.key for s in beside.settings] == ["marble-gtzan-fault-filtered"]
    measured = [r for r in beside.rows if not r.reported]
    assert [(r.label, r.rank) for r in measured] == [("mert-v1-95m", 1)]
    assert {r.label for r in beside.rows if r.reported} >= {"MERT-v1-95M", "Jukebox-5B"}
    assert all(r.rank is None for r in beside.rows if r.reported)
    # the seed project's split is not embench's random split: its rows stay apart
    assert by_split["gtzan-random-80-20-seed0"].settings == []
    assert "marble-gtzan-fault-filtered" not in {t.settings[0].key for t in site.literature}
    assert {t.settings[0].key for t in site.literature} == {
        "seed-gtzan-frozen", "seed-gtzan-finetuned", "lp-musiccaps-supervised"}
