"""The published leaderboard as data: which rows go in which table, in what order, with which
charts. The markdown page, the HTML page and the PNG charts are all rendered from one
:class:`Site`, so they cannot disagree.

The ranking rule. Measured rows share a table (and a ranking) only when they agree on task,
task version, dataset, protocol, split id, main score and its direction, and the embench release
series (``major.minor`` of the version that measured them): a release that changes how a
protocol scores bumps at least the minor version, so its numbers start a new table instead of
mixing with the old ones. Within a table the newest run per (encoder, weights) is kept.
Literature rows (:mod:`embench.literature`) sit beside measured rows only when their setting
says it is embench's task, protocol and split; they are never ranked. Strings here are raw and
untrusted: the renderers escape them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from embench.leaderboard import format_score
from embench.literature import LITERATURE, ReportedRow, Setting
from embench.result_files import run_started

if TYPE_CHECKING:
    from embench.comparison import Difference
    from embench.results import PairFailure, RunResult, TaskResult

__all__ = ["ChartSpec", "ResultFile", "Site", "SiteRow", "SiteTable", "build_site", "slug"]

DAGGER = "†"


@dataclass(frozen=True)
class ResultFile:
    """A submitted run and its file name inside ``leaderboard/results/``."""

    name: str
    run: RunResult

    @property
    def anchor(self) -> str:
        return "run-" + slug(self.name.removesuffix(".json"))

    def provenance(self) -> list[tuple[str, str]]:
        """What a reader needs to trust or reproduce the run, as (name, value) pairs."""
        prov = self.run.provenance
        facts = [
            ("run id", self.run.run_id), ("schema", self.run.schema_version),
            ("embench", prov.embench_version), ("git commit", prov.git_commit),
            ("python", prov.python), ("torch", prov.torch), ("transformers", prov.transformers),
            ("platform", prov.platform), ("device", prov.device), ("started", prov.started_at),
            ("finished", prov.finished_at), ("command", " ".join(prov.command_line) or None),
            ("environment", " ".join(f"{k}={v}" for k, v in prov.environment.items()) or None),
            ("kernel routes", "; ".join(f"{encoder}: {line}"
                                        for encoder, lines in prov.kernel_routes.items()
                                        for line in lines) or None),
        ]
        return [(name, value) for name, value in facts if value]


@dataclass(frozen=True)
class SiteRow:
    """One row of a table: measured (``file`` set) or reported (``setting`` set)."""

    label: str
    mean: float
    ci: tuple[float, float] | None = None
    seeds: tuple[int, ...] = ()
    per_seed: tuple[float, ...] = ()
    others: dict[str, float] = field(default_factory=dict)
    rank: int | None = None
    flags: tuple[str, ...] = ()
    notes: str | None = None
    skipped: int = 0
    missing: int = 0
    file: ResultFile | None = None
    layer_curve: tuple[float, ...] | None = None
    weighted_sum: float | None = None
    setting: Setting | None = None
    encoder: str | None = None
    shown: dict[str, str] = field(default_factory=dict)  # reported figures as published
    result: TaskResult | None = field(default=None, repr=False, compare=False)
    delta: Difference | None = None  # this row minus the table's top measured row

    def text(self, metric: str, value: float) -> str:
        """A reported figure exactly as its source prints it; a measured one to two places."""
        return self.shown.get(metric) or format_score(value)

    @property
    def reported(self) -> bool:
        return self.setting is not None

    @property
    def chart_label(self) -> str:
        return f"{self.label} {DAGGER}" if self.reported else self.label

    @property
    def heat_label(self) -> str:
        """Heat-map rows are encoders: a reported row goes on its embench encoder's name when it
        has one, so one checkpoint is one row across sources."""
        return f"{self.encoder or self.label} {DAGGER}" if self.reported else self.label


@dataclass
class SiteTable:
    """One comparable setting: its rows best first, the settings of literature rows in it, and
    the trivial baselines measured on the same split."""

    slug: str
    task: str
    protocol: str
    split_id: str
    dataset_id: str
    main_score: str
    higher_is_better: bool
    task_version: str | None = None
    series: str | None = None
    captioner: str | None = None  # captioning tables: the T5 every row trained
    rows: list[SiteRow] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    baselines_differ: bool = False
    superseded: list[tuple[str, str, list[str]]] = field(default_factory=list)
    no_column: str | None = None  # why no row has a Δ though some have per-clip scores

    @property
    def measured(self) -> bool:
        return any(not r.reported for r in self.rows)

    @property
    def has_deltas(self) -> bool:
        """Whether the table shows the Δ vs #1 column (some row could be compared)."""
        return any(r.delta is not None for r in self.rows)

    @property
    def title(self) -> str:
        title = f"{self.task} · {self.protocol} · split {self.split_id}"
        return title + (f" · captioner {self.captioner}" if self.captioner is not None else "")

    @property
    def others(self) -> list[str]:
        return sorted({m for r in self.rows for m in r.others})


@dataclass(frozen=True)
class ChartSpec:
    """Everything one chart shows, as plain JSON-able data: the PNG and the inline SVG are
    drawn from it, and its fingerprint tells ``leaderboard check`` whether a PNG is current."""

    name: str
    kind: str  # "heatmap" | "bars" | "layers"
    title: str
    data: dict[str, Any]


@dataclass
class Site:
    measured: list[SiteTable]
    literature: list[SiteTable]
    files: list[ResultFile]
    failures: list[tuple[PairFailure, ResultFile]]

    @property
    def tables(self) -> list[SiteTable]:
        return self.measured + self.literature

    def charts(self) -> list[ChartSpec]:
        """The heat map (task x encoder) over every table, then per table its bar chart and,
        for probes that recorded one, the per-layer validation curve."""
        specs = [_heatmap(self.tables)] if self.tables else []
        for table in self.tables:
            specs.append(_bars(table))
            layers = _layers(table)
            if layers is not None:
                specs.append(layers)
        return specs


def slug(*parts: str) -> str:
    """A stable id made of ``[a-z0-9-]``: readable prefix plus a hash of the exact parts, so two
    hostile names that sanitise alike still get different ids."""
    joined = "\x1f".join(parts)
    text = re.sub(r"[^a-z0-9]+", "-", joined.lower()).strip("-")[:48].strip("-")
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:8]
    return f"{text}-{digest}" if text else digest


def series(version: str) -> str:
    """``major.minor`` of a version string (the whole string when it has no such prefix)."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else version


def _label(res: TaskResult) -> str:
    if res.weights == "pretrained":
        return res.encoder
    return res.encoder + (" (random init)" if res.weights == "random" else f" ({res.weights})")


def _layer_curve(res: TaskResult) -> tuple[tuple[float, ...] | None, float | None]:
    """Mean over seeds of the probe's per-layer validation scores, when every seed has them."""
    seeds = res.details.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        return None, None
    curves = [s.get("valid_accuracy_by_layer") if isinstance(s, dict) else None for s in seeds]
    if not all(isinstance(c, list) and c for c in curves) or len({len(c) for c in curves}) != 1:
        return None, None
    try:
        mean = tuple(sum(float(v) for v in col) / len(col) for col in zip(*curves, strict=True))
        sums = [float(s["valid_accuracy_weighted_sum"]) for s in seeds
                if s.get("valid_accuracy_weighted_sum") is not None]
    except (TypeError, ValueError):
        return None, None
    return mean, (sum(sums) / len(sums) if sums else None)


def _measured_row(res: TaskResult, file: ResultFile) -> SiteRow:
    main = res.summary.get(res.main_score)
    ci = None
    if main is not None and main.n >= 2 and not math.isnan(main.ci95_half_width):
        ci = (main.ci95_low, main.ci95_high)
    curve, weighted = _layer_curve(res)
    return SiteRow(
        label=_label(res), encoder=res.encoder, mean=main.mean if main else math.nan, ci=ci,
        seeds=tuple(res.seeds), per_seed=tuple(res.scores.get(res.main_score, ())),
        others={m: s.mean for m, s in res.summary.items() if m != res.main_score},
        flags=tuple(res.flags), notes=res.notes, skipped=len(res.skipped),
        missing=len(res.missing), file=file, layer_curve=curve, weighted_sum=weighted,
        result=res,
    )


def _reported_row(setting: Setting, row: ReportedRow) -> SiteRow:
    return SiteRow(
        label=row.model, encoder=row.encoder, mean=row.value(setting.main_score),
        others={m: float(t) for m, t in row.scores if m != setting.main_score},
        setting=setting, shown=dict(row.scores),
    )


def _order(table: SiteTable) -> None:
    """Best first (NaN last); measured rows ranked among themselves, ties sharing a rank, and
    each compared with the top one where both have per-clip scores."""
    from embench.comparison import compare_with_top

    sign = -1.0 if table.higher_is_better else 1.0

    def key(row: SiteRow) -> tuple:
        value = math.inf if math.isnan(row.mean) else sign * row.mean
        return value, row.reported, row.label, row.file.name if row.file else ""

    table.rows.sort(key=key)
    measured = [i for i, row in enumerate(table.rows)
                if not row.reported and not math.isnan(row.mean)]
    rank, prev = 0, None
    for seen, i in enumerate(measured, start=1):
        if table.rows[i].mean != prev:
            rank, prev = seen, table.rows[i].mean
        table.rows[i] = replace(table.rows[i], rank=rank)
    results = [table.rows[i].result for i in measured]
    if results and all(r is not None for r in results):  # rows built from result files
        diffs, table.no_column = compare_with_top(results)
        for i, delta in zip(measured, diffs, strict=True):
            table.rows[i] = replace(table.rows[i], delta=delta)


def _measured_tables(files: Sequence[ResultFile]) -> list[SiteTable]:
    groups: dict[tuple, list[tuple[TaskResult, ResultFile]]] = {}
    for file in files:
        for res in file.run.results:
            key = (res.task, res.task_version, res.protocol, res.split_id, res.dataset_id,
                   res.main_score, res.higher_is_better,
                   series(file.run.provenance.embench_version), res.captioner)
            groups.setdefault(key, []).append((res, file))
    tables = []
    for key in sorted(groups, key=lambda k: tuple(str(p) for p in k)):
        task, version, protocol, split_id, dataset_id, main_score, higher, ser, captioner = key
        table = SiteTable(
            slug=slug(*(str(p) for p in key[:-1] + ((captioner,) if captioner else ()))),
            task=task, task_version=version, protocol=protocol, split_id=split_id,
            dataset_id=dataset_id, main_score=main_score, higher_is_better=higher, series=ser,
            captioner=captioner,
        )
        newest: dict[tuple[str, str], tuple[TaskResult, ResultFile]] = {}
        dropped: dict[tuple[str, str], list[str]] = {}
        for res, file in groups[key]:
            k = (res.encoder, res.weights)
            old = newest.get(k)
            if old is None:
                newest[k] = (res, file)
                continue
            keep, drop = ((res, file), old) if _age(file) >= _age(old[1]) else (old, (res, file))
            newest[k] = keep
            dropped.setdefault(k, []).append(drop[1].run.run_id)
        table.rows = [_measured_row(res, file) for res, file in newest.values()]
        table.superseded = [(_label(newest[k][0]), newest[k][1].run.run_id, sorted(ids))
                            for k, ids in sorted(dropped.items())]
        _set_baselines(table, list(newest.values()))
        tables.append(table)
    return tables


def _age(file: ResultFile) -> tuple:
    return run_started(file.run), file.run.run_id, file.name


def _set_baselines(table: SiteTable, rows: list[tuple[TaskResult, ResultFile]]) -> None:
    with_baselines = sorted((r for r in rows if r[0].baselines), key=lambda r: _age(r[1]))
    if with_baselines:
        table.baselines = dict(with_baselines[-1][0].baselines)
        table.baselines_differ = len({tuple(sorted(r[0].baselines.items()))
                                      for r in with_baselines}) > 1


def _literature_table(setting: Setting) -> SiteTable:
    return SiteTable(
        slug=slug("literature", setting.key), task=setting.task, protocol=setting.protocol,
        split_id=setting.split_id, dataset_id=setting.dataset_id,
        main_score=setting.main_score, higher_is_better=setting.higher_is_better,
    )


def build_site(files: Sequence[ResultFile], literature: Sequence[Setting] = LITERATURE) -> Site:
    """Group measured results into tables, place each literature setting beside the measured
    tables it matches (or in a table of its own), and order every table."""
    files = sorted(files, key=lambda f: f.name)
    measured = _measured_tables(files)
    own: list[SiteTable] = []
    for setting in literature:
        matches = [t for t in measured if setting.beside_measured and
                   (t.task, t.protocol, t.split_id, t.dataset_id, t.main_score,
                    t.higher_is_better) ==
                   (setting.task, setting.protocol, setting.split_id, setting.dataset_id,
                    setting.main_score, setting.higher_is_better)]
        targets = matches or [_literature_table(setting)]
        for table in targets:
            table.settings.append(setting)
            table.rows += [_reported_row(setting, row) for row in setting.rows]
        if not matches:
            own += targets
    for table in measured + own:
        _order(table)
    failures = [(fail, file) for file in files for fail in file.run.failures]
    return Site(measured=measured, literature=own, files=files, failures=failures)


# --------------------------------------------------------------------------------- chart data


def _column_title(table: SiteTable) -> str:
    return f"{table.task}\n{table.protocol}\n{table.split_id}"


def _heatmap(tables: list[SiteTable]) -> ChartSpec:
    labels: list[str] = []
    for table in tables:
        labels += [r.heat_label for r in table.rows if r.heat_label not in labels]
    values: list[list[float | None]] = [[None] * len(tables) for _ in labels]
    texts = [[""] * len(tables) for _ in labels]
    for j, table in enumerate(tables):
        for row in table.rows:
            i = labels.index(row.heat_label)
            if values[i][j] is None and not math.isnan(row.mean):
                values[i][j] = row.mean
                texts[i][j] = row.text(table.main_score, row.mean)
    return ChartSpec(
        name="heatmap", kind="heatmap", title="Main score by task and encoder",
        data={"columns": [_column_title(t) for t in tables],
              "metrics": [t.main_score for t in tables],
              "higher_is_better": [t.higher_is_better for t in tables],
              "rows": labels, "values": values, "texts": texts},
    )


def _bars(table: SiteTable) -> ChartSpec:
    bars = [{"label": r.chart_label, "mean": None if math.isnan(r.mean) else r.mean,
             "text": r.text(table.main_score, r.mean),
             "low": r.ci[0] if r.ci else None, "high": r.ci[1] if r.ci else None,
             "reported": r.reported} for r in table.rows]
    return ChartSpec(
        name=table.slug, kind="bars", title=table.title,
        data={"metric": table.main_score, "higher_is_better": table.higher_is_better,
              "bars": bars, "baselines": dict(sorted(table.baselines.items()))},
    )


def _layers(table: SiteTable) -> ChartSpec | None:
    curves = [{"label": r.chart_label, "values": list(r.layer_curve),
               "weighted_sum": r.weighted_sum} for r in table.rows if r.layer_curve]
    if not curves:
        return None
    return ChartSpec(
        name=table.slug + "-layers", kind="layers",
        title=f"{table.title}: validation score by layer (mean over seeds)",
        data={"metric": "valid " + table.main_score, "curves": curves},
    )
