"""Plots of classification results: each picture is a real, non-trivial PNG, file names cannot
escape the output folder, and `embench plot` draws a real toy run end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from embench import plots  # noqa: E402
from embench.errors import EmbenchError  # noqa: E402
from embench.results import Provenance, RunResult, RunSpec, ScoreSummary, TaskResult  # noqa: E402
from tests.helpers_cli import run_main  # noqa: E402
from tests.helpers_features import features_from_means, synthetic_classification  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_kb: float = 10.0, min_side: int = 300) -> np.ndarray:
    """A PNG that is more than an empty canvas: signature, size, dimensions, several colours."""
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > min_kb * 1024
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 20
    return image


def test_plot_confusion_ten_classes(tmp_path):
    labels = [f"genre-{name}" for name in ("blues", "classical", "country", "disco", "hiphop",
                                            "jazz", "metal", "pop", "reggae", "rock")]
    rng = np.random.default_rng(0)
    matrix = (np.eye(10, dtype=int) * 8 + rng.integers(0, 3, size=(10, 10))).tolist()
    matrix[3] = [0] * 10  # a class without test clips must not divide by zero
    out = plots.plot_confusion(matrix, labels, "enc · task · probe", tmp_path / "c.png")
    assert_png(out)
    with pytest.raises(ValueError):
        plots.plot_confusion(matrix, labels[:9], "bad", tmp_path / "bad.png")


def test_plot_layer_curve(tmp_path):
    curves = [list(np.linspace(40, 80, 13) + s) for s in range(3)]
    curves[1][0] = None  # a layer that was never a candidate is a gap, not a crash
    out = plots.plot_layer_curve(curves, [78.0, None, 79.0], "layers", tmp_path / "l.png",
                                 chosen_layers=[12, 12, "weighted_sum"])
    assert_png(out)


def test_pca_2d_explained_variance_and_constant_features():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    x = np.stack([t, 2 * t, np.full(200, 5.0), 1e-3 * rng.normal(size=200)], axis=1)
    coords, (r1, r2) = plots.pca_2d(x)
    assert coords.shape == (200, 2) and np.isfinite(coords).all()
    assert r1 == pytest.approx(2 / 3, abs=0.01) and r1 + r2 <= 1.0 + 1e-9
    _, (one, zero) = plots.pca_2d(rng.normal(size=(5, 1)))
    assert one == pytest.approx(1.0) and zero == 0.0


def test_plot_projection(tmp_path):
    rng = np.random.default_rng(1)
    labels = [f"class{i % 4}" for i in range(120)]
    x = rng.normal(size=(120, 32)) + 4 * np.eye(32)[[i % 4 for i in range(120)]]
    out = plots.plot_projection(x, labels, "pca", tmp_path / "p.png")
    assert_png(out)
    with pytest.raises(ValueError):
        plots.plot_projection(x, labels[:10], "bad", tmp_path / "bad.png")


def test_safe_name_stays_in_folder():
    name = plots.safe_name("../../etc/passwd", "<b>task</b>", "probe")
    assert "/" not in name and not name.startswith(".") and name.endswith("probe")
    assert plots.safe_name("...") == "_"


def _classification_result(labels: tuple[str, ...], layers: list[int | str], num_layers: int = 4,
                           encoder: str = "fake/enc ../x") -> TaskResult:
    n = len(labels)
    seeds = [{"seed": i, "layer": layer, "valid_accuracy_by_layer": [30.0 + 10 * k + i
                                                                     for k in range(num_layers)],
              "valid_accuracy_weighted_sum": 65.0 + i,
              "confusion_matrix": (np.eye(n, dtype=int) * 9 + 1).tolist()}
             for i, layer in enumerate(layers)]
    acc = [70.0 + i for i in range(len(layers))]
    return TaskResult(
        encoder=encoder, task="synthetic-task", task_version="1", dataset_id="synthetic",
        protocol="probe", split_id="synthetic-v1", main_score="accuracy",
        seeds=list(range(len(layers))), scores={"accuracy": acc},
        summary={"accuracy": ScoreSummary.from_values(acc)},
        details={"labels": list(labels), "seeds": seeds},
    )


@pytest.mark.parametrize("chosen", [2, "weighted_sum"])
def test_write_classification_plots(tmp_path, monkeypatch, chosen):
    clips, means = synthetic_classification(num_layers=4)
    features = features_from_means(tmp_path / "cache", [c.id for c in clips], means)
    result = _classification_result(clips.labels, [chosen, 1])
    seen: dict = {}
    original = plots.plot_projection

    def spy(x, labels, title, path, classes=None):
        seen.update(x=x, labels=labels, title=title)
        return original(x, labels, title, path, classes=classes)

    monkeypatch.setattr(plots, "plot_projection", spy)
    written = plots.write_classification_plots(result, tmp_path / "out", features, clips)
    assert [p.name.rsplit("__", 1)[1] for p in written] == ["confusion.png", "layers.png",
                                                            "pca.png"]
    for path in written:
        assert path.parent == tmp_path / "out" and "/" not in path.name  # sanitised encoder
        assert_png(path)
    layer = 2 if chosen == 2 else 3
    assert f"layer {layer}" in seen["title"]
    assert ("weighted sum" in seen["title"]) == (chosen == "weighted_sum")
    np.testing.assert_allclose(seen["x"], features.clip_means(layer, [c.id for c in clips]))
    assert seen["labels"] == [c.target for c in clips]


def test_write_classification_plots_without_features(tmp_path):
    result = _classification_result(("a", "b", "c"), [1])
    written = plots.write_classification_plots(result, tmp_path, None, None)
    assert [p.name.rsplit("__", 1)[1] for p in written] == ["confusion.png", "layers.png"]
    with pytest.raises(EmbenchError, match="not a classification result"):
        plots.write_classification_plots(result.model_copy(update={"details": {}}), tmp_path)


def _write_run(tmp_path: Path, results: list[TaskResult]) -> Path:
    run = RunResult(
        run_id="test-run", results=results,
        provenance=Provenance(embench_version="0", python="3", platform="x", device="cpu",
                              started_at="now"),
        spec=RunSpec(encoders=["e"], tasks=["t"], seeds=[0], data_dir=str(tmp_path / "nodata"),
                     cache_dir=str(tmp_path / "nocache"), output_dir=str(tmp_path)),
    )
    path = tmp_path / "run-test-run.json"
    path.write_text(run.model_dump_json())
    return path


def test_cli_plot_errors(tmp_path, capsys):
    assert run_main(["plot", str(tmp_path / "missing.json")]) == 2
    assert "No result file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_main(["plot", str(bad)]) == 2
    assert "not an embench run result" in capsys.readouterr().err
    no_class = _classification_result(("a", "b"), [0]).model_copy(update={"details": {}})
    assert run_main(["plot", str(_write_run(tmp_path, [no_class]))]) == 2
    assert "no classification results" in capsys.readouterr().err


def test_cli_plot_without_cache_keeps_other_plots(tmp_path, capsys):
    path = _write_run(tmp_path, [_classification_result(("a", "b", "c"), [1])])
    assert run_main(["plot", str(path)]) == 0
    captured = capsys.readouterr()
    assert "No projection for" in captured.err and "no cache folder or cache key" in captured.err
    folder = tmp_path / "run-test-run-plots"
    assert sorted(p.name.rsplit("__", 1)[1] for p in folder.glob("*.png")) == [
        "confusion.png", "layers.png"]
    assert captured.out.split() == [str(p) for p in sorted(folder.glob("*.png"))]


def test_cli_plot_real_toy_run(tmp_path, capsys):
    """The linear protocol writes the same classification details as the MLP probe (both come
    from evaluate_classification) in a fraction of the time."""
    out = tmp_path / "results"
    assert run_main(["run", "-e", "melspec", "-t", "toy-genres", "-p", "linear", "--seeds", "1",
                     "--no-progress", "--num-workers", "0", "-o", str(out)]) == 0
    (result_file,) = out.glob("run-*.json")
    capsys.readouterr()
    assert run_main(["plot", str(result_file)]) == 0
    captured = capsys.readouterr()
    run_id = json.loads(result_file.read_text())["run_id"]
    folder = out / f"run-{run_id}-plots"
    written = {p.name for p in folder.glob("*.png")}
    assert written == {f"melspec__toy-genres__linear__{kind}.png"
                       for kind in ("confusion", "layers", "pca")}
    assert sorted(captured.out.split()) == sorted(str(folder / n) for n in written)
    for name in written:
        assert_png(folder / name)

    shutil.rmtree(tmp_path / "cache")  # conftest's EMBENCH_CACHE: the projection has no input
    assert run_main(["plot", str(result_file), "--output-dir", str(tmp_path / "again")]) == 0
    assert "no cached embeddings" in capsys.readouterr().err
    assert len(list((tmp_path / "again").glob("*.png"))) == 2
