"""The leaderboard must never rank incomparable numbers together and never let a result file
inject markup into the page; these tests pin both, plus loading and the row rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from embench.errors import EmbenchError
from embench.leaderboard import escape_md, render_markdown, write_markdown
from embench.result_files import load_results
from embench.results import (
    SCHEMA_VERSION,
    PairFailure,
    Provenance,
    RunResult,
    ScoreSummary,
    SkippedClip,
    TaskResult,
)


def task_result(encoder: str = "melspec", values: tuple[float, ...] = (0.5, 0.6, 0.7), **kw):
    fields = {
        "encoder": encoder,
        "task": "toy-genres",
        "task_version": "1",
        "dataset_id": "toy/genres",
        "protocol": "probe",
        "split_id": "toy-genres-v1-fixed",
        "main_score": "accuracy",
        "seeds": list(range(len(values))),
        "scores": {"accuracy": list(values)},
        "summary": {"accuracy": ScoreSummary.from_values(list(values))},
    }
    fields.update(kw)
    return TaskResult(**fields)


def run(
    results: list[TaskResult], run_id: str = "run-1", started: str = "2024-05-01T10:00:00Z", **kw
):
    prov = Provenance(
        embench_version="0.1.0", python="3.11", platform="linux", device="cpu", started_at=started
    )
    return RunResult(run_id=run_id, provenance=prov, results=results, **kw)


def cells(line: str) -> list[str]:
    """Split a table row on pipes that are not backslash-escaped (an escaped backslash before a
    pipe leaves the pipe live, so count backslashes rather than look one character back)."""
    out, cur, i = [], "", 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur += line[i : i + 2]
            i += 2
            continue
        if ch == "|":
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return [c.strip() for c in out[1:-1]]


def tables(md: str) -> dict[str, list[list[str]]]:
    """Map each ``###`` heading to its table rows (header first, separator dropped)."""
    found: dict[str, list[list[str]]] = {}
    heading = None
    for line in md.splitlines():
        if line.startswith("### "):
            heading = line[4:]
            assert heading not in found, f"duplicate heading {heading!r}"
            found[heading] = []
        elif line.startswith("#"):
            heading = None
        elif line.startswith("|") and heading is not None and not line.startswith("|---"):
            found[heading].append(cells(line))
    return found


def encoder_order(md: str, heading: str) -> list[str]:
    return [row[1] for row in tables(md)[heading][1:]]


HEADING = "toy-genres · probe · split toy-genres-v1-fixed"


def test_separate_tables_per_split_protocol_and_version():
    runs = [
        run(
            [
                task_result("a"),
                task_result("b", split_id="toy-genres-v2-fixed"),
                task_result("c", protocol="knn"),
                task_result("d", task_version="2"),
            ]
        )
    ]
    md = render_markdown(runs)
    found = tables(md)
    assert len(found) == 4
    assert "toy-genres · probe · split toy-genres-v2-fixed" in found
    assert "toy-genres · knn · split toy-genres-v1-fixed" in found
    # same task, protocol and split but another task version: both headings say which
    full = " · dataset toy/genres · accuracy (higher is better)"
    assert f"{HEADING} · task version 1{full}" in found
    assert f"{HEADING} · task version 2{full}" in found
    for rows in found.values():
        assert len(rows) == 2  # header + one encoder: nothing mixed
    assert "Dataset toy/genres" in md and "main score **accuracy**" in md


def test_each_captioner_has_its_own_table():
    """Same task, protocol and split, other captioner (``embench run --captioner``): two tables,
    each heading naming its captioner, and the later run replaces nothing."""
    md = render_markdown([
        run([task_result("a", details={"captioner": "t5-small"})], run_id="r1",
            started="2024-05-01T10:00:00Z"),
        run([task_result("a", details={"captioner": "/models/my-t5"})], run_id="r2",
            started="2024-06-01T10:00:00Z"),
    ])
    found = tables(md)
    assert set(found) == {f"{HEADING} · captioner t5-small", f"{HEADING} · captioner /models/my-t5"}
    assert "dropped" not in md


@pytest.mark.parametrize("higher", [True, False])
def test_best_first(higher: bool):
    res = [
        task_result("mid", (0.5, 0.5), higher_is_better=higher),
        task_result("low", (0.1, 0.2), higher_is_better=higher),
        task_result("high", (0.9, 0.8), higher_is_better=higher),
    ]
    md = render_markdown([run(res)])
    order = encoder_order(md, HEADING)
    assert order == (["high", "mid", "low"] if higher else ["low", "mid", "high"])
    ranks = [row[0] for row in tables(md)[HEADING][1:]]
    assert ranks == ["1", "2", "3"]
    assert ("higher is better" if higher else "lower is better") in md


def test_row_contents():
    res = task_result(
        "melspec",
        (0.5, 0.7),
        weights="random",
        scores={"accuracy": [0.5, 0.7], "f1": [0.4, 0.6]},
        summary={
            "accuracy": ScoreSummary.from_values([0.5, 0.7]),
            "f1": ScoreSummary.from_values([0.4, 0.6]),
        },
        train_scores={"accuracy": [0.9, 1.0]},
        skipped=[SkippedClip(clip_id="x", reason="empty file")],
        flags=["does-not-beat-constant-caption"],
    )
    md = render_markdown([run([res], run_id="r42")])
    header, row = tables(md)[HEADING]
    assert header == [
        "#", "Encoder", "accuracy (mean ± 95% CI)", "f1", "n", "Train accuracy",
        "Skipped", "Flags", "Run / embench",
    ]  # fmt: skip
    half = ScoreSummary.from_values([0.5, 0.7]).ci95_half_width
    assert row[1] == "melspec (random init)"
    assert row[2] == f"0.60 ± {half:.2f}"
    assert row[3:7] == ["0.50", "2", "0.95", "1"]
    assert row[7] == "⚠ does-not-beat-constant-caption"
    assert row[8] == "r42 / 0.1.0"


def test_reported_marker_and_footnote():
    paper = task_result("clap", (0.8,), reported=True, source="Smith et al. 2023, Table 2")
    md = render_markdown([run([task_result("melspec"), paper])])
    rows = tables(md)[HEADING][1:]
    assert rows[0][:2] == ["†", "clap †"]  # shown, never ranked: #1 is a measured row
    assert rows[1][:2] == ["1", "melspec"]
    assert rows[0][2] == "0.80"  # one value: no fake ± 0
    footnote = [line for line in md.splitlines() if line.startswith("† ")]
    assert footnote and "clap" in footnote[0] and "Smith et al. 2023, Table 2" in footnote[0]


def test_newest_run_wins():
    old = run([task_result("melspec", (0.9, 0.9))], run_id="old", started="2024-01-01T00:00:00Z")
    new = run([task_result("melspec", (0.4, 0.4))], run_id="new", started="2024-06-01T00:00:00")
    other = run([task_result("melspec", (0.5, 0.5), weights="random")], run_id="rnd")
    md = render_markdown([new, old, other])
    rows = tables(md)[HEADING][1:]
    assert [(r[1], r[-1]) for r in rows] == [
        ("melspec (random init)", "rnd / 0.1.0"),
        ("melspec", "new / 0.1.0"),
    ]
    assert "only the newest is shown" in md and "dropped old" in md


def test_baselines_line_and_disagreement():
    base = {"chance": 16.666, "majority": 20.0}
    md = render_markdown([run([task_result("a", baselines=base), task_result("b")])])
    assert "Baselines on the same split: chance 16.67 · majority 20.00" in md
    md = render_markdown(
        [
            run([task_result("a", baselines=base)], run_id="r1"),
            run([task_result("b", baselines={"chance": 10.0})], run_id="r2"),
        ]
    )
    assert "differ between runs" in md
    assert "- a (r1): chance 16.67 · majority 20.00" in md
    assert "- b (r2): chance 10.00" in md


def test_failures_section():
    fail = PairFailure(encoder="clap", task="toy-genres", error_type="MissingWeightsError",
                       reason="weights not cached | run `embench fetch`")  # fmt: skip
    md = render_markdown([run([], failures=[fail])])
    section = md.split("## Failed pairs", 1)[1]
    row = [line for line in section.splitlines() if line.startswith("| clap")][0]
    assert cells(row)[3:5] == [
        "MissingWeightsError",
        "weights not cached \\| run \\`embench fetch\\`",
    ]


HOSTILE = [
    "<script>alert(1)</script>",
    "| col |",
    "[x](javascript:alert(1))",
    "two\nlines\r\n| injected | row |",
    "**bold** _it_ `code` <img src=x onerror=alert(1)> \\| &lt;b&gt;",
    "https://evil.example www.evil.com me@evil.com",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_escape_md_is_inert(text: str):
    out = escape_md(text)
    assert "<" not in out and ">" not in out and "](" not in out
    assert "https://" not in out and "www." not in out.lower()
    assert not re.search(r"@\w", out)  # GFM would autolink an e-mail address
    assert "\n" not in out and "\r" not in out
    assert len(cells(f"| {out} |")) == 1


def test_hostile_strings_in_every_field():
    evil = " ".join(HOSTILE)
    res = task_result(
        evil,
        (0.5, 0.6),
        reported=True,
        source=evil,
        notes=evil,
        flags=[evil],
        baselines={evil: 1.0},
        details={"captioner": evil},  # lands in a heading
    )
    fail = PairFailure(encoder=evil, task=evil, protocol=evil, error_type=evil, reason=evil)
    md = render_markdown([run([res, task_result("ok")], run_id=evil, failures=[fail])])
    assert "<script" not in md.lower() and "<img" not in md.lower()
    assert "](" not in md and "https://" not in md
    found = tables(md)
    for rows in found.values():
        width = len(rows[0])
        assert all(len(r) == width for r in rows)
    fail_rows = [cells(x) for x in md.split("## Failed pairs")[1].splitlines() if x.startswith("|")]
    assert all(len(r) == 6 for r in fail_rows)
    # every line of the page is one we wrote: injected newlines never start a row or heading
    assert not any(line.startswith("| injected") for line in md.splitlines())


def test_write_markdown_atomic(tmp_path: Path):
    target = tmp_path / "out" / "leaderboard.md"
    write_markdown([run([task_result()])], target)
    assert target.read_text(encoding="utf-8").startswith("# embench leaderboard")
    assert [p.name for p in target.parent.iterdir()] == ["leaderboard.md"]  # no temp left


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_results_folder(tmp_path: Path):
    good = run([task_result()], run_id="good")
    write_json(tmp_path / "a" / "good.json", good.model_dump(mode="json"))
    write_json(tmp_path / "config.json", {"name": "not a result"})
    (tmp_path / "junk.json").write_text("{not json", encoding="utf-8")
    runs = load_results([tmp_path])
    assert [r.run_id for r in runs] == ["good"]
    assert runs[0] == good

    bad = good.model_dump(mode="json")
    bad["results"][0]["summary"]["accuracy"]["mean"] = "lots"
    bad_path = write_json(tmp_path / "b" / "bad.json", bad)
    with pytest.raises(EmbenchError) as info:
        load_results([tmp_path])
    msg = str(info.value)
    assert str(bad_path) in msg
    assert "results.0.summary.accuracy.mean" in msg
    assert "valid number" in msg


def test_load_results_explicit_file_errors(tmp_path: Path):
    other = write_json(tmp_path / "other.json", {"name": "x"})
    with pytest.raises(EmbenchError, match="not an embench run result"):
        load_results([other])
    with pytest.raises(EmbenchError, match="No such result file"):
        load_results([tmp_path / "missing.json"])
    truncated = tmp_path / "sub" / "cut.json"
    truncated.parent.mkdir()
    truncated.write_text('{"schema_version": "1.0", "run_id": "x", "prov', encoding="utf-8")
    with pytest.raises(EmbenchError, match="not valid JSON"):
        load_results([tmp_path / "sub"])


def test_load_results_other_schema_major(tmp_path: Path):
    data = run([task_result()]).model_dump(mode="json")
    major = int(SCHEMA_VERSION.split(".")[0]) + 1
    data["schema_version"] = f"{major}.0"
    data["provenance"]["embench_version"] = "9.9.9"
    data["brand_new_field"] = True
    path = write_json(tmp_path / "future.json", data)
    with pytest.raises(EmbenchError) as info:
        load_results([path])
    msg = str(info.value)
    assert str(path) in msg and f"{major}.0" in msg and "embench 9.9.9" in msg
    assert f"schema {major}.x" in msg


def test_empty_and_nan():
    assert "No results." in render_markdown([])
    md = render_markdown([run([task_result("nan", (float("nan"),)), task_result("ok")])])
    rows = tables(md)[HEADING][1:]
    assert [r[1] for r in rows] == ["ok", "nan"]
    assert rows[1][0] == "—" and rows[1][2] == "n/a"
