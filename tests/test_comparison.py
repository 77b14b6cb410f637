"""The Δ vs #1 column: paired differences between leaderboard rows, from per-clip scores."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from embench.comparison import EXPLANATION, difference
from embench.leaderboard import render_markdown
from embench.leaderboard_build import build
from embench.leaderboard_site import ResultFile, build_site
from embench.result_files import edited_problems
from embench.results import ItemScores, ScoreSummary
from embench.stats import paired_bootstrap_difference
from tests.fakes import FakePlugin, ToneTask
from tests.leaderboard_fixtures import make_run, new_board, probe_result, write_run


def _correct(n: int, hits: set[int]) -> list[float]:
    return [100.0 if j in hits else 0.0 for j in range(n)]


def _with_items(encoder: str, rows: list[list[float]], ids: list[str] | None = None, **kw):
    """A probe result whose per-seed accuracies are exactly what its item scores give."""
    ids = ids or [f"clip{j:03d}" for j in range(len(rows[0]))]
    acc = [float(np.mean(r)) for r in rows]
    return probe_result(encoder, tuple(acc), item_scores=ItemScores(
        metric="accuracy", clip_ids=ids, values=rows), **kw)


# ------------------------------------------------------------------------- the statistics


def test_identical_systems_differ_by_exactly_nothing():
    a = np.array([_correct(50, set(range(0, 50, 3)))])
    delta, low, high = paired_bootstrap_difference(a, a.copy())
    assert delta == low == high == 0.0


def test_pairing_shows_a_gap_the_rows_own_intervals_cannot():
    """Both rows get the same 100 of 200 clips right; A gets 8 more. Unpaired, 4 points on 200
    clips is noise (SE about 5); paired, the other 192 clips agree and the gap is clear."""
    n, base = 200, set(range(100))
    a = np.array([_correct(n, base | set(range(100, 108)))])
    b = np.array([_correct(n, base)])
    delta, low, high = paired_bootstrap_difference(a, b)
    assert delta == pytest.approx(4.0)
    assert 0 < low < delta < high < 9
    unpaired_half = 1.96 * np.sqrt(a.var() / n + b.var() / n)
    assert unpaired_half > delta  # the rows' own intervals overlap


def test_seed_noise_widens_the_interval():
    """Two rows with the same mean on every clip: one steady over seeds, one whose seeds score
    100, 0 and 50 everywhere. Only the second's interval may be wide."""
    rng = np.random.default_rng(1)
    b = (rng.random((1, 100)) < 0.5) * 100.0
    steady = np.full((3, 100), 50.0)
    shaky = np.stack([np.full(100, 100.0), np.zeros(100), np.full(100, 50.0)])
    _, lo1, hi1 = paired_bootstrap_difference(steady, b)
    _, lo2, hi2 = paired_bootstrap_difference(shaky, b)
    assert hi2 - lo2 > 3 * (hi1 - lo1)


def test_clip_noise_that_seeds_reshuffle_is_counted_once():
    """Seeds that change which clips are right but not how many add no seed-level error: the
    interval must be as wide as a bootstrap of the seed-averaged clips alone, not 1.7x that
    (drawing seeds as well counts the clip-by-seed noise a second time)."""
    rng = np.random.default_rng(4)
    n = 290
    a = np.stack([rng.permutation(np.r_[np.full(200, 100.0), np.zeros(n - 200)])
                  for _ in range(3)])
    b = np.stack([rng.permutation(np.r_[np.full(180, 100.0), np.zeros(n - 180)])
                  for _ in range(3)])
    _, low, high = paired_bootstrap_difference(a, b)
    _, low1, high1 = paired_bootstrap_difference(a.mean(0)[None], b.mean(0)[None])
    assert high - low == pytest.approx(high1 - low1, rel=0.05)


def test_the_interval_is_reproducible_and_checks_shapes():
    rng = np.random.default_rng(2)
    a, b = rng.random((3, 40)), rng.random((2, 40))
    assert paired_bootstrap_difference(a, b) == paired_bootstrap_difference(a, b)
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap_difference(a, b[:, :39])


# ---------------------------------------------------------------------- rows and item scores


def test_difference_pairs_clips_by_id_whatever_their_order_and_skips():
    n = 60
    top = _with_items("mert-v1-95m", [_correct(n, set(range(40)))] * 2)
    ids = [f"clip{j:03d}" for j in range(n)]
    # the other row lists its clips backwards and lost clip 0 (skipped)
    rows = _correct(n, set(range(30)))[1:][::-1]
    other = _with_items("melspec", [rows] * 2, ids=ids[1:][::-1])
    d = difference(other, top)
    assert (d.n_clips, d.of_clips) == (n - 1, n)
    assert d.delta == pytest.approx((29 - 39) / 59 * 100)
    assert d.clear and d.text().startswith("-16.95 (") and d.text().endswith(", 59 of 60 clips")


def test_a_gap_needs_shared_clips_and_a_verdict_needs_two_seeds():
    ids = [f"clip{j:03d}" for j in range(48)]
    top = _with_items("a", [_correct(48, set(range(40)))] * 3, ids=ids)
    sliver = _with_items("b", [_correct(20, set())] * 3, ids=ids[:20])  # 20 of 48 clips
    assert difference(sliver, top) is None
    one_seed = _with_items("c", [_correct(48, set(range(10)))], ids=ids)
    d = difference(one_seed, top)
    assert d.high < 0 and not d.clear  # far apart, yet one seed says nothing of seed spread
    assert d.text().endswith(" 1 seed") and "n.s." not in d.text()


def test_an_interval_stays_within_what_the_scores_allow():
    top = _with_items("a", [_correct(20, set(range(20)))] * 3)  # 100% on every seed
    shaky = _with_items("b", [_correct(20, set()), _correct(20, set(range(20))),
                              _correct(20, set(range(10)))])  # 0%, 100%, 50%
    d = difference(shaky, top)
    assert d.delta == pytest.approx(-50.0) and -100.0 <= d.low <= d.delta <= d.high <= 0.0


def test_the_cell_says_which_row_ran_one_seed():
    ids = [f"clip{j:03d}" for j in range(48)]
    lone_top = _with_items("a", [_correct(48, set(range(40)))], ids=ids)
    five = _with_items("b", [_correct(48, set(range(10 + s))) for s in range(5)], ids=ids)
    d = difference(five, lone_top)
    assert d.text().endswith(" #1 ran 1 seed") and not d.clear


def test_a_table_whose_rows_share_too_few_clips_says_so():
    ids = [f"clip{j:03d}" for j in range(48)]
    top = _with_items("a", [_correct(48, set(range(40)))] * 3, ids=ids)
    sliver = _with_items("b", [_correct(12, set())] * 3, ids=ids[:12])
    text = render_markdown([make_run([top, sliver])])
    assert "Δ vs #1 (95% CI)" not in text
    assert "No Δ vs #1 column: no row shares at least 10 test clips and half" in text


def test_what_is_shown_decides_the_verdict():
    from embench.comparison import Difference

    assert Difference(0.004, 0.001, 0.009, 100).text() == "+0.00 (+0.00, +0.01) n.s."
    assert Difference(-0.001, -0.004, 0.002, 100).text() == "+0.00 (+0.00, +0.00) n.s."
    assert Difference(-1.0, -2.0, -0.006, 100).clear


def test_no_difference_without_item_scores_for_the_main_score():
    top = _with_items("a", [_correct(10, {1, 2})])
    assert difference(probe_result("b"), top) is None
    macro = probe_result("b", item_scores=ItemScores(metric="macro_f1", clip_ids=["x"],
                                                      values=[[1.0]] * 3))
    assert difference(macro, top) is None
    elsewhere = _with_items("c", [_correct(3, {0})], ids=["p", "q", "r"])
    assert difference(elsewhere, top) is None  # no clip in common


def test_item_scores_must_be_rectangular_and_back_the_scores():
    with pytest.raises(ValidationError, match="repeats a clip id"):
        ItemScores(metric="accuracy", clip_ids=["a", "a"], values=[[0.0, 0.0]])
    with pytest.raises(ValidationError, match=r"values\[1\] holds 1 values for 2 clip ids"):
        ItemScores(metric="accuracy", clip_ids=["a", "b"], values=[[0.0, 0.0], [1.0]])
    items = ItemScores(metric="accuracy", clip_ids=["a", "b"], values=[[100.0, 0.0]])
    assert items.problems([0], {"accuracy": [50.0]}) == []
    assert "average 50.0 but the accuracy score is 60.0" in items.problems(
        [0], {"accuracy": [60.0]})[0]
    assert "1 rows of item scores" in items.problems([0, 1], {"accuracy": [50.0, 50.0]})[0]
    assert "no per-seed scores" in items.problems([0], {"bleu4": [1.0]})[0]


def test_edited_item_scores_are_caught_like_an_edited_summary():
    res = _with_items("a", [_correct(10, {1, 2, 3})])
    res.item_scores.values[0][0] = 100.0  # one more "correct" clip, the score left as it was
    (problem,) = edited_problems(make_run([res]))
    assert problem.startswith("field results.0.item_scores: seed 0: the item scores average")


# ------------------------------------------------------------------------------- the pages


def _three_rows():
    n = 120
    best = _with_items("mert-v1-95m", [_correct(n, set(range(90 + s))) for s in range(3)])
    close = _with_items("wav2vec2-base", [_correct(n, set(range(88 + s))) for s in range(3)])
    far = _with_items("melspec", [_correct(n, set(range(60 + s))) for s in range(3)])
    return [best, close, far]


def test_markdown_leaderboard_shows_the_gap_to_the_top_row():
    old = probe_result("clap-music", (20.0, 21.0, 22.0))  # a file from before schema 1.1
    text = render_markdown([make_run([*_three_rows(), old])])
    lines = {line.split(" | ")[1]: line for line in text.splitlines()
             if line.startswith("| ") and " | " in line}
    assert "Δ vs #1 (95% CI)" in text and EXPLANATION.split(":")[0] in text
    cell = lines["wav2vec2-base"].split(" | ")[3]
    assert cell.startswith("-1.67 (") and cell.endswith("n.s.")
    cell = lines["melspec"].split(" | ")[3]
    assert cell.startswith("-25.00 (") and "n.s." not in cell
    assert lines["mert-v1-95m"].split(" | ")[3] == ""  # the reference itself
    assert lines["clap-music"].split(" | ")[3] == ""  # nothing to pair it on


def test_a_literature_row_on_top_is_not_the_reference():
    paper = probe_result("jukebox", (99.0,), reported=True, source="a paper")
    text = render_markdown([make_run([paper, *_three_rows()])])
    lines = {line.split(" | ")[1]: line.split(" | ") for line in text.splitlines()
             if line.startswith("| ") and " | " in line}
    assert lines["jukebox †"][0] == "| †" and lines["mert-v1-95m"][0] == "| 1"
    assert lines["mert-v1-95m"][3] == "" and lines["melspec"][3].startswith("-25.00 (")


def test_a_top_row_without_item_scores_says_why_there_is_no_column(tmp_path):
    old_top = probe_result("clap-music", (90.0, 91.0, 92.0))  # a file from before schema 1.1
    text = render_markdown([make_run([old_top, *_three_rows()])])
    assert "Δ vs #1 (95% CI)" not in text and "No Δ vs #1 column: the top row's result" in text
    (table,) = build_site([ResultFile("r.json", make_run([old_top, *_three_rows()]))]).measured
    assert table.no_column.startswith("No Δ vs #1 column: the top row") and not table.has_deltas
    board = new_board(tmp_path)
    write_run(board / "results" / "r.json", make_run([old_top, *_three_rows()]))
    build(board)
    assert "No Δ vs #1 column" in (board / "README.md").read_text()
    assert "No Δ vs #1 column" in (board / "index.html").read_text()


def test_no_column_when_no_row_can_be_compared():
    text = render_markdown([make_run([probe_result("a"), probe_result("b", (1.0, 2.0, 3.0))])])
    assert "Δ vs #1" not in text and EXPLANATION not in text


def test_published_pages_show_the_gap_and_say_what_it_means(tmp_path):
    site = build_site([ResultFile("r.json", make_run(_three_rows()))])
    (table,) = site.measured
    assert table.has_deltas
    by_label = {row.label: row for row in table.rows}
    assert by_label["mert-v1-95m"].delta is None
    assert by_label["melspec"].delta.clear and not by_label["wav2vec2-base"].delta.clear
    board = new_board(tmp_path)
    write_run(board / "results" / "r.json", make_run(_three_rows()))
    build(board)
    for page in ("README.md", "index.html"):
        text = (board / page).read_text()
        assert "Δ vs #1 (95% CI)" in text and "-25.00 (" in text and "n.s." in text
        assert "adds two noises once each" in text


def test_a_summary_test_helper_keeps_its_meaning():
    """The fixtures above build accuracies from the item scores: keep them honest."""
    res = _three_rows()[0]
    assert res.summary["accuracy"] == ScoreSummary.from_values(res.scores["accuracy"])
    assert edited_problems(make_run([res])) == []


# ---------------------------------------------------------------------- a task plugin's duty


class _ItemTones(ToneTask):
    """The fake task, also returning its item scores: right, off by one clip, as a plain dict,
    or over the train clips."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def evaluate(self, ctx):
        ev = super().evaluate(ctx)
        split = "train" if self.how == "train-ids" else "test"
        test = [c.id for c in ctx.clips if c.split == split and c.id in ctx.features.clip_ids]
        hits = round(ev.scores["accuracy"][0] / 100 * len(test)) - (self.how == "off-by-one")
        row = [100.0 if j < hits else 0.0 for j in range(len(test))]
        if self.how == "train-ids":  # the right average, on the wrong clips
            row = [ev.scores["accuracy"][0]] * len(test)
        ev.item_scores = ItemScores(metric="accuracy", clip_ids=test,
                                    values=[row] * len(ctx.seeds))
        if self.how == "dict":
            ev.item_scores = ev.item_scores.model_dump()
        return ev


@pytest.mark.parametrize("how, reason", [
    ("honest", None),
    ("off-by-one", "returned item scores that do not give its scores: seed 0: the item scores "
                   "average"),
    ("dict", "returned item_scores of type dict; it must be an embench.ItemScores"),
    ("train-ids", "returned item scores that do not give its scores: clip 'low0' is not a "
                  "test clip"),
])
def test_a_task_is_held_to_its_item_scores(tmp_path, capsys, how, reason):
    import json

    from embench import plugins
    from tests.helpers_cli import run_main

    plugins.register_plugin(FakePlugin(task=_ItemTones(how)), name="items")
    out = tmp_path / "out"
    code = run_main(["run", "-e", "fake-spectral", "-t", "fake-tones", "--seeds", "0,1",
                     "--device", "cpu", "-o", str(out)])
    (path,) = out.glob("run-*.json")
    run = json.loads(path.read_text())
    if reason is None:
        assert code == 0 and len(run["results"][0]["item_scores"]["values"]) == 2
    else:
        assert code == 1 and not run["results"]
        assert reason in run["failures"][0]["reason"]


def test_the_run_summary_names_each_tasks_best_and_the_gaps_to_it():
    from embench.run_summary import gap_lines

    lone = _with_items("melspec", [_correct(10, {1})], task="other-task")
    (line,) = gap_lines(make_run([*_three_rows()[::-1], lone]))
    assert line.startswith("toy-genres · probe: best mert-v1-95m; gap to mert-v1-95m (accuracy, ")
    assert "wav2vec2-base -1.67 (" in line and "; melspec -25.00 (" in line
    assert gap_lines(make_run([probe_result("a"), probe_result("b")])) == []  # no item scores
    best, twin, far = _three_rows()
    twin = twin.model_copy(update={"scores": best.scores, "summary": best.summary,
                                   "item_scores": best.item_scores})
    (line,) = gap_lines(make_run([far, twin, best]))
    assert "tied best wav2vec2-base, mert-v1-95m; gap to wav2vec2-base" in line \
        or "tied best mert-v1-95m, wav2vec2-base; gap to mert-v1-95m" in line


# ----------------------------------------------------------------------------- corpus BLEU


def _caption_row(encoder: str, hyps_per_seed: list[list[str]], refs: list[str]):
    from embench.caption_metrics import corpus_bleu
    from embench.captioning import caption_item_scores

    ids = [f"yt{j:03d}" for j in range(len(refs))]
    items = caption_item_scores("bleu4", [(ids, hyps, refs) for hyps in hyps_per_seed])
    bleu = [corpus_bleu(h, refs) for h in hyps_per_seed]
    return probe_result(encoder, tuple(bleu), main_score="bleu4", protocol="captioner",
                        task="toy-captions", scores={"bleu4": bleu},
                        summary={"bleu4": ScoreSummary.from_values(bleu)}, item_scores=items)


def test_captioning_rows_are_compared_on_corpus_bleu_of_the_drawn_clips():
    rng = np.random.default_rng(3)
    words = ["a", "slow", "fast", "guitar", "piano", "song",
             "with", "drums", "and", "soft", "male", "vocal"]
    refs = [" ".join(rng.choice(words, 8)) for _ in range(80)]
    good = [[r if j % 4 else " ".join(rng.choice(words, 8)) for j, r in enumerate(refs)]
            for _ in range(2)]  # three in four clips captioned exactly
    poor = [[" ".join(rng.choice(words, 8)) for _ in refs] for _ in range(2)]
    top, other = _caption_row("good", good, refs), _caption_row("poor", poor, refs)
    assert top.item_scores.problems(top.seeds, top.scores) == []
    d = difference(other, top)
    assert d.delta == pytest.approx(other.main.mean - top.main.mean)
    assert d.clear and d.high < 0
    same = difference(_caption_row("again", good, refs), top)
    assert same.delta == 0.0 and not same.clear
    text = render_markdown([make_run([top, other])])
    assert "Δ vs #1 (95% CI)" in text and f"{d.delta:+.2f} (" in text


def test_bleu_item_scores_are_checked_like_any_other():
    with pytest.raises(ValidationError, match="aggregate 'bleu' hold one list"):
        ItemScores(metric="bleu4", clip_ids=["a"], values=[[3.0]], aggregate="bleu")
    with pytest.raises(ValidationError, match="aggregate 'mean' hold one number"):
        ItemScores(metric="accuracy", clip_ids=["a"], values=[[[1.0, 2.0]]])
    row = _caption_row("x", [["a slow song with soft male vocal", "fast loud drums and bass"]],
                       ["a slow song with soft vocal", "fast drums and a loud bass"])
    assert row.main.mean > 0
    row.item_scores.values[0][0][2] -= 1  # one matching unigram fewer than the captions have
    (problem,) = edited_problems(make_run([row]))
    assert "the item scores give a corpus BLEU of" in problem
    good = row.item_scores.values[0][0]
    for edit in ({2: good[2] + 50}, {3: -1.0}, {6: good[6] + 1}, {4: 0.5}):
        stats = [edit.get(k, v) for k, v in enumerate(good)]
        with pytest.raises(ValidationError, match="are not BLEU counts"):
            ItemScores(metric="bleu4", clip_ids=["a"], values=[[stats]], aggregate="bleu")


def test_result_files_keep_lists_of_numbers_on_one_line_and_parse_the_same(tmp_path):
    import json
    import math

    from embench.result_files import load_result_file
    from embench.results import run_json

    res = _with_items("a", [_correct(300, set(range(0, 300, 2)))] * 3,
                      notes='a string "[1,\n 2]" and "0123:4" stays as it is')
    res.scores["macro_f1"][0] = math.nan
    run = make_run([res])
    text = run_json(run)
    assert json.loads(text) == json.loads(run.model_dump_json())  # NaN as null included
    rows = [line for line in text.splitlines() if line.strip().startswith("[100.0, 0.0, ")]
    assert len(rows) == 3  # 900 item scores: a line per seed, not per value
    assert '"macro_f1": [null, ' in text and '\\n' in text
    path = tmp_path / "run.json"
    path.write_text(text, encoding="utf-8")  # and the run reads its own file back, NaN and all
    back = load_result_file(path).results[0]
    assert math.isnan(back.scores["macro_f1"][0])


@pytest.mark.slow
@pytest.mark.parametrize("seed_sd, at_least", [(0.0, 0.95), (0.3, 0.95), (0.6, 0.95)])
def test_the_interval_covers_the_true_gap(seed_sd, at_least):
    """Simulated probes: clip difficulty d ~ N(0, 1.5) on the logit scale, system skills 0.6 and
    0.3, a per-seed shift ~ N(0, seed_sd) (0.3 swings accuracy by about 6 points). The truth is
    the expected accuracy gap over clips and seeds; 300 test splits of 290 clips, 3 seeds."""
    rng = np.random.default_rng(0)

    def correct(skill, d):
        return (rng.random(len(d)) < 1 / (1 + np.exp(d - skill - rng.normal(0, seed_sd)))) * 100.0

    d = rng.normal(0, 1.5, 400_000)
    truth = np.mean(1 / (1 + np.exp(d - 0.6 - rng.normal(0, seed_sd, d.size)))
                    - 1 / (1 + np.exp(d - 0.3 - rng.normal(0, seed_sd, d.size)))) * 100
    covered = 0
    for rep in range(300):
        d = rng.normal(0, 1.5, 290)
        a = np.stack([correct(0.6, d) for _ in range(3)])
        b = np.stack([correct(0.3, d) for _ in range(3)])
        _, low, high = paired_bootstrap_difference(a, b, n_resamples=1000, seed=rep)
        covered += low <= truth <= high
    assert covered / 300 >= at_least
