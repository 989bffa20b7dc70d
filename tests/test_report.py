"""Figures (valid PNG files) and reports (Markdown tables, results.json round trip)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from safetynet.errors import InputError
from safetynet.evaluation import plots
from safetynet.cross_attack import cross_attack_matrix
from safetynet.metrics import detection_metrics
from safetynet.evaluation.report import (
    MarkdownReport,
    environment_info,
    image_link,
    markdown_table,
    read_results_json,
    to_jsonable,
    write_results_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path, min_bytes=3000):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > min_bytes


def _scores(seed, shift):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, 200), rng.normal(shift, 1, 150)


# --------------------------------------------------------------------------- plots


def test_plots_write_valid_pngs(tmp_path):
    points = [
        {"detector": "SVM", "attack": "fgsm", "eps": 2, "adversary_success": 0.6, "detector_accuracy": 0.93},
        {"detector": "SVM", "attack": "fgsm", "eps": 8, "adversary_success": 0.9, "detector_accuracy": 0.99},
        {"detector": "subnet", "attack": "deepfool", "adversary_success": 0.99, "detector_accuracy": 0.8},
    ]
    assert _is_png(plots.plot_success_vs_accuracy(points, tmp_path / "fig2.png", title="Figure 2"))
    curves = {"fgsm": _scores(0, 2.0), "pgd": _scores(1, 1.0)}
    assert _is_png(plots.plot_roc_curves(curves, tmp_path / "roc.png"))
    assert _is_png(plots.plot_roc_curves(curves, tmp_path / "roc_log.png", log_fpr=True))
    m = cross_attack_matrix({"fgsm": curves, "pgd": {"fgsm": _scores(2, 0.5), "pgd": _scores(3, 3.0)}})
    assert _is_png(plots.plot_cross_attack_heatmap(m, tmp_path / "heat.png", metric="auc"))
    series = {"fgsm": ([1, 2, 4, 8], [0.2, 0.4, 0.7, 0.9]), "pgd": (np.array([8, 2]), torch.tensor([1.0, 0.6]))}
    assert _is_png(plots.plot_success_vs_eps(series, tmp_path / "eps.png"))
    # Nothing but the five figures (no temp files left behind).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eps.png", "fig2.png", "heat.png", "roc.png", "roc_log.png"]


def test_plot_errors(tmp_path):
    with pytest.raises(InputError, match="adversary_success"):
        plots.plot_success_vs_accuracy([{"detector": "a", "attack": "b", "detector_accuracy": 0.5}], tmp_path / "x.png")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        plots.plot_success_vs_accuracy([{"detector": "a", "attack": "b", "adversary_success": 80,
                                         "detector_accuracy": 0.5}], tmp_path / "x.png")
    with pytest.raises(InputError, match="PNG"):
        plots.plot_roc_curves({"a": _scores(0, 1)}, tmp_path / "x.pdf")
    with pytest.raises(InputError, match="equally long"):
        plots.plot_success_vs_eps({"a": ([1, 2], [0.5])}, tmp_path / "x.png")
    with pytest.raises(InputError, match="CrossAttackMatrix"):
        plots.plot_cross_attack_heatmap({"auc": 1}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- Markdown


def test_markdown_table_renders_expected_text():
    rows = [{"attack": "fgsm", "auc": 0.98765, "n": 100, "note": "a|b"},
            {"attack": "pgd", "auc": float("nan"), "n": 50}]
    text = markdown_table(rows, formats={"auc": "{:.1%}"})
    assert text == (
        "| attack | auc | n | note |\n"
        "| :--- | ---: | ---: | :--- |\n"
        "| fgsm | 98.8% | 100 | a\\|b |\n"
        "| pgd | n/a | 50 | n/a |\n"
    )
    text = markdown_table(rows, columns=["n", "auc"], headers={"auc": "AUC"}, float_fmt="{:.2f}")
    assert text.splitlines()[0] == "| n | AUC |" and text.splitlines()[2] == "| 100 | 0.99 |"
    with pytest.raises(InputError):
        markdown_table([])


def test_report_with_relative_image_links(tmp_path):
    (tmp_path / "figs").mkdir()
    img = tmp_path / "figs" / "roc.png"
    img.write_bytes(PNG_MAGIC)
    assert image_link(img, tmp_path / "report.md", "ROC") == "![ROC](figs/roc.png)"
    assert image_link(img, tmp_path / "sub" / "report.md") == "![](../figs/roc.png)"
    rep = MarkdownReport(tmp_path / "report.md", title="Eval")
    rep.heading("Detection").table([{"attack": "fgsm", "auc": 0.5}]).image(img, "ROC").paragraph("done")
    path = rep.write()
    assert path.read_text() == ("# Eval\n\n## Detection\n\n| attack | auc |\n| :--- | ---: |\n| fgsm | 0.500 |\n\n"
                                "![ROC](figs/roc.png)\n\ndone\n")


# --------------------------------------------------------------------------- JSON


def test_results_json_round_trip_keeps_numbers(tmp_path):
    m = detection_metrics(*_scores(0, 1.5))
    results = {
        "metrics": m,
        "counts": np.array([1, 2, 3]),
        "rate": np.float32(0.25),
        "undefined": float("nan"),
        "inf": -math.inf,
        "tensor": torch.tensor([0.5, float("nan")]),
        ("a", 1): True,
        "flag": np.bool_(False),
    }
    path = write_results_json(tmp_path / "out" / "results.json", results, config={"eps": [2 / 255], "dataset": "digits"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = read_results_json(path)
    r = doc["results"]
    assert r["metrics"]["auc"] == pytest.approx(m.auc) and isinstance(r["metrics"]["auc"], float)
    assert isinstance(r["metrics"]["n_natural"], int) and r["metrics"]["n_natural"] == 200
    assert r["counts"] == [1, 2, 3] and r["rate"] == 0.25
    assert r["undefined"] is None and r["inf"] is None and r["tensor"] == [0.5, None]
    assert r["('a', 1)"] is True and r["flag"] is False
    assert doc["config"] == {"eps": [2 / 255], "dataset": "digits"}
    env = doc["environment"]
    for key in ("python", "torch", "numpy", "scikit-learn", "safetynet", "timestamp"):
        assert env[key], key
    assert json.loads(text) == doc


def test_to_jsonable_rejects_unknown_objects(tmp_path):
    with pytest.raises(InputError, match="JSON"):
        to_jsonable({"x": object()})
    with pytest.raises(InputError, match="JSON"):
        write_results_json(tmp_path / "r.json", {"x": object()})
    assert not (tmp_path / "r.json").exists()
    assert environment_info()["torch"] == torch.__version__.split("+")[0] or environment_info()["torch"].startswith(torch.__version__[:4])
