"""The published leaderboard folder: grouping and ranking rules, build/check, validation of
result files, and that no string from a result file becomes markup or a non-http link."""

from __future__ import annotations

import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from embench.errors import EmbenchError
from embench.leaderboard_build import build, check, load_published
from embench.leaderboard_charts import FINGERPRINT_KEY, fingerprint, read_fingerprint
from embench.leaderboard_html import SCRIPT
from embench.leaderboard_site import ResultFile, build_site, series
from embench.results import PairFailure
from embench.safe_links import linkify_html, linkify_md, md_link, safe_url
from tests.helpers_cli import run_main
from tests.leaderboard_fixtures import make_run, new_board, probe_result, write_run

ROOT = Path(__file__).resolve().parent.parent


def _site(*runs):
    return build_site([ResultFile(f"r{i}.json", run) for i, run in enumerate(runs)])


def _toy(site):
    (table,) = [t for t in site.measured if t.task == "toy-genres"]
    return table


# ------------------------------------------------------------------------------ grouping rules


def test_release_series_splits_tables_patch_releases_do_not():
    assert series("0.1.0") == "0.1" and series("1.12.3rc1") == "1.12" and series("dev") == "dev"
    site = _site(make_run([probe_result("a")], run_id="r1", version="0.1.0"),
                 make_run([probe_result("b")], run_id="r2", version="0.1.7"),
                 make_run([probe_result("c")], run_id="r3", version="0.2.0"))
    tables = [t for t in site.measured if t.task == "toy-genres"]
    assert [(t.series, sorted(r.label for r in t.rows)) for t in tables] == [
        ("0.1", ["a", "b"]), ("0.2", ["c"])]
    assert len({t.slug for t in tables}) == 2


@pytest.mark.parametrize("field,value", [("task_version", "2"), ("protocol", "linear"),
                                         ("split_id", "other"), ("dataset_id", "x/y"),
                                         ("higher_is_better", False)])
def test_other_setting_other_table(field, value):
    site = _site(make_run([probe_result("a"), probe_result("b", **{field: value})]))
    assert len([t for t in site.measured if t.task == "toy-genres"]) == 2


def test_another_captioner_is_another_table_and_not_a_rerun():
    """``--captioner`` changes what a captioning score means: a later run of the same encoder
    with another captioner must neither share the table nor replace the row."""
    def captioned(captioner):
        return probe_result("a", details={"captioner": captioner})

    site = _site(make_run([captioned("t5-small")], run_id="r1", started="2026-01-01T00:00:00Z"),
                 make_run([captioned("scratch")], run_id="r2", started="2026-06-01T00:00:00Z"),
                 make_run([probe_result("b")], run_id="r3"))
    tables = {t.title: [r.label for r in t.rows] for t in site.measured}
    split = "toy-genres · probe · split toy-genres-v1-fixed"
    assert tables == {f"{split} · captioner t5-small": ["a"], f"{split} · captioner scratch": ["a"],
                      split: ["b"]}
    assert all(not t.superseded for t in site.measured)
    assert len({t.slug for t in site.measured}) == 3


def test_newest_run_per_encoder_and_weights_wins_and_ties_share_a_rank():
    old = make_run([probe_result("a", (90.0, 90.0))], run_id="old", started="2026-01-01T00:00:00Z")
    new = make_run([probe_result("a", (50.0, 50.0)), probe_result("b", (50.0, 50.0)),
                    probe_result("a", (10.0, 12.0), weights="random")], run_id="new",
                   started="2026-06-01T00:00:00Z")
    table = _toy(_site(new, old))
    assert [(r.label, r.rank, r.file.run.run_id) for r in table.rows] == [
        ("a", 1, "new"), ("b", 1, "new"), ("a (random init)", 3, "new")]
    assert table.superseded == [("a", "new", ["old"])]


def test_provenance_shows_the_embench_environment_only_when_set():
    run = make_run([probe_result("a")])
    assert "environment" not in dict(ResultFile("r.json", run).provenance())
    run.provenance.environment = {"EMBENCH_FIRST_LAYER": "module", "EMBENCH_UNFOLD_CONV": "pos"}
    facts = dict(ResultFile("r.json", run).provenance())
    assert facts["environment"] == "EMBENCH_FIRST_LAYER=module EMBENCH_UNFOLD_CONV=pos"
    assert "kernel routes" not in facts
    run.provenance.kernel_routes = {"mert-v1-95m": ["FFN first Linear + GELU: fused (...)",
                                                    "positional conv: fft (...)"]}
    assert dict(ResultFile("r.json", run).provenance())["kernel routes"] == (
        "mert-v1-95m: FFN first Linear + GELU: fused (...); "
        "mert-v1-95m: positional conv: fft (...)")


def test_layer_curve_is_the_mean_over_seeds():
    row = _toy(_site(make_run([probe_result("melspec", (60.0, 70.0))]))).rows[0]
    assert row.layer_curve == (55.5, 61.5, 58.5)  # seeds 0 and 1 add 0 and 1 to the curve
    assert row.weighted_sum == 60.0 and row.ci is not None and row.seeds == (0, 1)


def test_no_layer_curve_without_per_layer_details():
    row = _toy(_site(make_run([probe_result("a", details={})]))).rows[0]
    assert row.layer_curve is None
    assert not [c for c in _site(make_run([probe_result("a", details={})])).charts()
                if c.kind == "layers"]


# -------------------------------------------------------------------------------- build, check


def test_build_writes_pages_and_charts_and_is_idempotent(tmp_path):
    board = new_board(tmp_path)
    write_run(board / "results" / "a.json", make_run([probe_result("melspec")]))
    report = build(board)
    names = sorted(p.relative_to(board).as_posix() for p in report.written)
    assert "README.md" in names and "index.html" in names
    charts = sorted((board / "charts").glob("*.png"))
    assert any(p.name == "heatmap.png" for p in charts)
    assert any(p.name.endswith("-layers.png") for p in charts)  # the probe's layer curve
    before = {p: p.read_bytes() for p in board.rglob("*") if p.is_file()}
    again = build(board)
    assert again.written == [] and again.removed == []
    assert {p: p.read_bytes() for p in board.rglob("*") if p.is_file()} == before
    assert check(board) == []
    readme = (board / "README.md").read_text()
    assert "results/a.json" in readme and "69.43 ± 6.58" in readme
    assert re.search(r"20\d\d-\d\d-\d\dT\d\d:\d\d", readme.replace("2026-11-27T10:00:00Z", ""))\
        is None  # no build timestamp, only the run's own


def test_check_names_what_is_out_of_date(tmp_path):
    board = new_board(tmp_path)
    write_run(board / "results" / "a.json", make_run([probe_result("melspec")]))
    build(board)
    (board / "README.md").write_text("edited by hand\n")
    heat = board / "charts" / "heatmap.png"
    shutil.copy(next(p for p in (board / "charts").glob("*-layers.png")), heat)
    (board / "charts" / "old.png").write_bytes(b"x")
    write_run(board / "results" / "b.json", make_run([probe_result("b")], run_id="run-b"))
    problems = check(board)
    text = "\n".join(problems)
    assert "README.md is out of date" in text and "index.html is out of date" in text
    assert "heatmap.png shows other data" in text and "old.png is no chart" in text
    assert "embench leaderboard build" in text
    build(board)
    assert check(board) == [] and not (board / "charts" / "old.png").exists()


def test_check_needs_no_matplotlib(tmp_path, monkeypatch):
    board = new_board(tmp_path)
    build(board)
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it now fails
    assert check(board) == []


def test_chart_fingerprint_round_trip(tmp_path):
    spec = _site().charts()[0]
    from embench.leaderboard_charts import draw_png

    path = draw_png(spec, tmp_path / "c.png")
    assert read_fingerprint(path) == fingerprint(spec)
    data = path.read_bytes()
    assert b"Software" not in data and b"matplotlib" not in data.lower()
    assert FINGERPRINT_KEY.encode() in data
    assert read_fingerprint(tmp_path / "missing.png") is None


def test_committed_leaderboard_is_up_to_date():
    """What CI runs as `embench leaderboard check`: the repository's own page is current."""
    assert check(ROOT / "leaderboard") == []
    assert [p.name for p in (ROOT / "leaderboard" / "results").iterdir()] == [".gitkeep"]


# ------------------------------------------------------------------------------- validation


def test_invalid_result_file_is_rejected_with_field_and_reason(tmp_path):
    board = new_board(tmp_path)
    data = make_run([probe_result("melspec")]).model_dump(mode="json")
    data["results"][0]["summary"]["accuracy"]["mean"] = "lots"
    (board / "results" / "bad.json").write_text(json.dumps(data))
    with pytest.raises(EmbenchError) as info:
        build(board)
    msg = str(info.value)
    assert "bad.json" in msg and "results.0.summary.accuracy.mean" in msg
    assert "valid number" in msg and "nothing was rendered" in msg
    assert not (board / "README.md").exists()


@pytest.mark.parametrize("name,content,expected", [
    ("evil name.json", None, "only result files named"),
    ("notes.txt", None, "only result files named"),
    ("other.json", {"hello": 1}, "not an embench run result"),
    ("reported.json", "reported", "results.0.reported"),
    ("failures.json", "failures", "no measured result (only 1 failed pair(s))"),
])
def test_what_may_not_be_in_results(tmp_path, name, content, expected):
    board = new_board(tmp_path)
    run = make_run([probe_result("melspec")])
    if content == "reported":
        run = make_run([probe_result("paper", reported=True, source="a paper")])
    elif content == "failures":
        run = make_run([], failures=[PairFailure(encoder="a", task="b", error_type="E",
                                                 reason="r")])
    text = json.dumps(content if isinstance(content, dict) else run.model_dump(mode="json"))
    (board / "results" / name).write_text(text)
    with pytest.raises(EmbenchError, match=re.escape(expected)):
        load_published(board)


def test_duplicate_run_ids_are_rejected(tmp_path):
    board = new_board(tmp_path)
    for name in ("a.json", "b.json"):
        write_run(board / "results" / name, make_run([probe_result("melspec")]))
    with pytest.raises(EmbenchError, match="is also in a.json"):
        load_published(board)


# ------------------------------------------------------------------------------ safe rendering

HOSTILE = [
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=\"window.__pwned=1\">",
    "[click](javascript:alert(1))",
    "javascript:alert(1)",
    "a | b\n| injected | row |\r\nline",
    "**bold** `code` ![i](http://evil.example/i.png) <b onmouseover=alert(1)>b</b>",
]
EVIL = " ".join(HOSTILE)


def hostile_run():
    res = probe_result(EVIL, notes=EVIL + " see https://ok.example/p?a=1&b=2' and "
                       "javascript:alert(2)", flags=[EVIL], baselines={EVIL: 1.0})
    res.details["captioner"] = EVIL  # lands in a table title
    fail = PairFailure(encoder=EVIL, task=EVIL, protocol=EVIL, error_type=EVIL, reason=EVIL)
    return make_run([res, probe_result("ok", (60.0, 61.0, 62.0))], run_id="evil-run",
                    failures=[fail])


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.hrefs, self.handlers, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [k for k, _ in attrs if k.startswith("on")]
        self.hrefs += [v for k, v in attrs if k in ("href", "src")]

    def handle_data(self, data):
        self.text.append(data)


def _safe_hrefs(hrefs):
    return all(h.startswith(("https://", "http://", "results/", "#", "charts/", "../"))
               or h in ("index.html", "results/") for h in hrefs)


def test_html_page_shows_hostile_strings_as_text_only(tmp_path):
    board = new_board(tmp_path)
    write_run(board / "results" / "evil.json", hostile_run())
    build(board)
    page = (board / "index.html").read_text()
    parser = _Tags()
    parser.feed(page)
    assert parser.tags.count("script") == 1 and "img" not in parser.tags
    assert "b" not in parser.tags and not parser.handlers
    assert _safe_hrefs(parser.hrefs), parser.hrefs
    assert "https://ok.example/p?a=1&b=2" in parser.hrefs  # a real link, quote left out
    text = "".join(parser.text)
    assert "<script>document.title='pwned'</script>" in text
    assert '<img src=x onerror="window.__pwned=1">' in text
    assert page.count("<script>") == 1 and SCRIPT in page


def test_markdown_page_stays_inert_under_a_lax_renderer(tmp_path):
    from markdown_it import MarkdownIt

    board = new_board(tmp_path)
    write_run(board / "results" / "evil.json", hostile_run())
    build(board)
    source = (board / "README.md").read_text()
    assert "](javascript" not in source.replace(" ", "")
    lax = MarkdownIt("commonmark", {"html": True}).enable("table")
    lax.validateLink = lambda url: True  # a renderer that trusts every link
    parser = _Tags()
    parser.feed(lax.render(source))
    assert "script" not in parser.tags and "b" not in parser.tags and not parser.handlers
    assert set(parser.tags) <= {"h1", "h2", "h3", "p", "a", "img", "table", "thead", "tbody",
                                "tr", "th", "td", "strong", "code", "ul", "li"}
    assert _safe_hrefs(parser.hrefs), parser.hrefs
    imgs = [h for h in parser.hrefs if h.startswith("charts/")]
    assert imgs and all(re.fullmatch(r"charts/[a-z0-9-]+\.png", h) for h in imgs)
    assert not any(line.startswith("| injected") for line in source.splitlines())


@pytest.mark.parametrize("url,expected", [
    ("https://arxiv.org/abs/2306.10548", "https://arxiv.org/abs/2306.10548"),
    ("HTTP://x.org/a b", None), ("javascript:alert(1)", None), ("data:text/html,x", None),
    ("//evil.example/x", None), ("results/x.json", None), ("https://", None),
    ("https://x.org/a\")onclick=(", "https://x.org/a%22%29onclick=%28"),
    ("https://x.org/|[]<>'`\\", "https://x.org/%7C%5B%5D%3C%3E%27%60%5C"),
    (" java\tscript:alert(1)", None), ("http://x.org/\nfoo", None),
])
def test_safe_url(url, expected):
    assert safe_url(url) == expected


def test_links_only_for_http():
    assert md_link("x", "javascript:alert(1)") == "x"
    assert md_link("x", "https://a.org/(b)") == "[x](https://a.org/%28b%29)"
    assert linkify_md("see https://a.org/x. ok") == "see [https\\://a.org/x](https://a.org/x). ok"
    assert "href" not in linkify_html("javascript:alert(1) data:x")
    assert linkify_html("<b>https://a.org</b>").startswith("&lt;b&gt;<a href=")


# ----------------------------------------------------------------------------------------- CLI


def test_cli_build_and_check(tmp_path, capsys):
    board = new_board(tmp_path)
    assert run_main(["leaderboard", "check", "--leaderboard-dir", str(board)]) == 1
    assert "README.md is missing" in capsys.readouterr().err
    assert run_main(["leaderboard", "build", "--leaderboard-dir", str(board)]) == 0
    assert "index.html" in capsys.readouterr().out
    assert run_main(["leaderboard", "check", "--leaderboard-dir", str(board)]) == 0
    assert run_main(["leaderboard", "build", "--leaderboard-dir", str(board)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert run_main(["leaderboard", "check", "--leaderboard-dir", str(tmp_path / "no")]) == 2
    assert "No result folder" in capsys.readouterr().err


def test_cli_original_leaderboard_command_still_works(tmp_path, capsys):
    write_run(tmp_path / "res" / "run.json", make_run([probe_result("melspec")]))
    out = tmp_path / "board.md"
    assert run_main(["leaderboard", str(tmp_path / "res"), "-o", str(out)]) == 0
    assert "| 1 | melspec |" in out.read_text()
    assert run_main(["leaderboard", str(tmp_path / "res")]) == 0
    assert "# embench leaderboard" in capsys.readouterr().out
    assert run_main(["leaderboard", "--help"]) == 0
    assert "build" in capsys.readouterr().out


def test_docs_describe_the_commands_that_exist():
    readme, contributing = (ROOT / "README.md").read_text(), (ROOT / "CONTRIBUTING.md").read_text()
    for command in ("embench leaderboard build", "embench leaderboard check", "embench submit"):
        assert command in readme and command in contributing
    assert "embench leaderboard check" in (ROOT / ".ci" / "run").read_text()
