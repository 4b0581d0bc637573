"""Training curves: hand-written stats.jsonl files in, panels, lines and min-max bands out."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from coral.figures import (_training_curves_axes, method_color, read_training_stats, training_curve_bands,
                           training_curve_quantities, training_curves_figure)

# (method, seed) -> lines of its stats.jsonl; coral logs two terms ddpm does not
STATS = {
    ("ddpm", 0): [{"step": 5, "lr": 1e-4, "loss": 0.8, "mse": 0.8, "grad_norm": 2.0, "img_per_s": 100.0},
                  {"step": 10, "lr": 2e-4, "loss": 0.4, "mse": 0.4, "grad_norm": 1.0, "img_per_s": 120.0}],
    ("ddpm", 1): [{"step": 5, "lr": 1e-4, "loss": 0.6, "mse": 0.6, "grad_norm": 4.0, "img_per_s": 110.0},
                  {"step": 10, "lr": 2e-4, "loss": 0.2, "mse": 0.2, "grad_norm": 3.0, "img_per_s": 130.0}],
    ("coral", 0): [{"step": 5, "lr": 1e-4, "loss": 1.0, "mse": 0.7, "supcon": 3.0, "coral_term": 0.3,
                    "grad_norm": 2.5, "img_per_s": 90.0},
                   {"step": 10, "lr": 2e-4, "loss": 0.5, "mse": 0.3, "supcon": 2.0, "coral_term": 0.2,
                    "grad_norm": 1.5, "img_per_s": 95.0}],
    ("coral", 1): [{"step": 5, "lr": 1e-4, "loss": 1.2, "mse": 0.9, "supcon": 3.5, "coral_term": 0.3,
                    "grad_norm": 2.0, "img_per_s": 80.0},
                   {"step": 10, "lr": 2e-4, "loss": 0.7, "mse": 0.5, "supcon": 2.5, "coral_term": 0.2,
                    "grad_norm": 1.0, "img_per_s": 85.0}],
}
QUANTITIES = ["loss", "mse", "supcon", "coral_term", "grad_norm", "img_per_s"]


@pytest.fixture
def runs(tmp_path):
    """stats.jsonl -> {method, seed}, as rule training_curves passes them (coral listed first on purpose)."""
    mapping = {}
    for (method, seed), lines in sorted(STATS.items()):
        path = tmp_path / "runs" / method / f"seed{seed}" / "stats.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        mapping[str(path)] = {"method": method, "seed": seed}
    return mapping


def test_bands_are_mean_min_and_max_over_seeds_at_each_step():
    stats = pd.DataFrame({"method": ["a", "a", "a", "a", "a", "b"], "seed": [0, 1, 2, 0, 1, 0],
                          "step": [5, 5, 5, 10, 10, 5], "quantity": ["loss"] * 6,
                          "value": [1.0, 4.0, 7.0, 2.0, np.nan, 9.0]})
    bands = training_curve_bands(stats)
    assert bands[["method", "quantity", "step"]].values.tolist() == [["a", "loss", 5], ["a", "loss", 10],
                                                                      ["b", "loss", 5]]
    assert bands["mean"].tolist() == [4.0, 2.0, 9.0]
    assert bands["low"].tolist() == [1.0, 2.0, 9.0] and bands["high"].tolist() == [7.0, 2.0, 9.0]
    assert bands["num_seeds"].tolist() == [3, 1, 1]  # a missing value is not a seed


def test_stats_are_read_into_one_long_table(runs):
    stats = read_training_stats(runs)
    assert set(stats.columns) == {"method", "seed", "step", "quantity", "value"}
    assert "lr" not in set(stats["quantity"]) and "step" not in set(stats["quantity"])
    assert len(stats) == 2 * 2 * 4 + 2 * 2 * 6  # ddpm: 4 quantities per line, coral: 6
    assert training_curve_quantities(stats) == QUANTITIES  # methods in coral.methods' order, grad norm and img/s last


def test_one_panel_per_quantity_one_line_per_method_that_logs_it(runs):
    fig = _training_curves_axes(read_training_stats(runs), "toy")
    assert [ax.get_title() for ax in fig.axes] == QUANTITIES
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        expected = ["coral"] if ax.get_title() in ("supcon", "coral_term") else ["ddpm", "coral"]
        assert labels == expected, ax.get_title()  # ddpm logs no SupCon term: no line there
        for line in ax.get_lines():
            assert line.get_color() == method_color(line.get_label())
    loss = fig.axes[0]
    ddpm = next(line for line in loss.get_lines() if line.get_label() == "ddpm")
    assert ddpm.get_xdata().tolist() == [5, 10] and ddpm.get_ydata().tolist() == pytest.approx([0.7, 0.3])
    # each method's band: from the minimum to the maximum over its two seeds
    bands = sorted(loss.collections, key=lambda band: band.get_paths()[0].vertices[:, 1].max())
    assert len(bands) == 2
    for band, (low, high) in zip(bands, [(0.2, 0.8), (0.5, 1.2)]):  # ddpm, then coral
        y = band.get_paths()[0].vertices[:, 1]
        assert y.min() == pytest.approx(low) and y.max() == pytest.approx(high)


def test_one_seed_draws_lines_without_bands(runs):
    one = {path: run for path, run in runs.items() if run["seed"] == 0}
    fig = _training_curves_axes(read_training_stats(one))
    assert len(fig.axes) == len(QUANTITIES)
    assert all(not ax.collections for ax in fig.axes)


def test_training_curves_figure_writes_a_png(runs, tmp_path):
    training_curves_figure(runs, tmp_path / "figures" / "training_curves_toy.png", setting="toy")
    with Image.open(tmp_path / "figures" / "training_curves_toy.png") as picture:
        width, height = picture.size
    assert width > height > 300  # 3 x 2 panels


def test_bad_stats_files_name_the_file_and_line(runs, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: no logged steps"):
        read_training_stats({empty: {"method": "ddpm", "seed": 0}})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "lo')
    with pytest.raises(ValueError, match="broken.jsonl, line 2: not JSON"):
        read_training_stats({broken: {"method": "ddpm", "seed": 0}})
    with pytest.raises(ValueError, match="needs a method and a seed"):
        read_training_stats({broken: {"method": "ddpm"}})
    with pytest.raises(ValueError, match="non-empty mapping"):
        training_curves_figure(list(runs), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
