"""Tables, figures and image grids: hand-written run artifacts in, hand-computed numbers out."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from coral.figures import ablation_figure, per_class_fid_figure, samples_figure, tsne_figure, tsne_run_figure
from coral.sample_grids import image_grid, save_grid_png
from coral.tables import (ablation_table, latent_table, main_table, markdown, omega_tuned_table, paper_vs_ours,
                          per_class_table)

SAMPLING = {"sampler": "ddim", "steps": 50, "eta": 0.0, "omega": 1.0, "num_samples": 100, "labels": "stratified"}


def metrics_json(tmp_path, dataset, rho, variant, seed, fid, tail_fid=10.0, omega=1.0, halves=None):
    """A metrics file as the evaluate stage writes it; every metric derived from `fid` for easy checks.
    `variant` is a method or an ablation variant of one (coral~tau_sc=0.5)."""
    overall = {"fid": fid, "isc_mean": fid / 10, "isc_std": 0.1, "kid_mean": fid / 100, "kid_std": 0.0,
               "precision": 0.5, "recall": fid / 100, "prd_f8": 0.6, "prd_f1_8": 0.7, "accuracy": 0.9}
    group = {"fid": tail_fid, "kid_mean": tail_fid / 100, "precision": 0.5, "recall": 0.5, "accuracy": 0.25}
    data = {"run": {"dataset": dataset, "rho": rho, "method": variant.split("~")[0], "variant": variant, "seed": seed},
            "sampling": dict(SAMPLING, omega=omega), "feature_extractor": "toy-classifier",
            "classifier_test_accuracy": 0.95, "num_generated": 100, "num_real": 1000, "overall": overall,
            "groups": {"head": dict(group, accuracy=0.75), "medium": group, "tail": group}, "provenance": {}}
    if halves is not None:
        data["reference_halves"] = {"seed": 0, "selection_fid": halves[0], "report_fid": halves[1]}
    path = tmp_path / f"{dataset}-{rho}-{variant}-{seed}-w{omega}.json"
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- main table

def test_main_table_means_stds_and_row_order(tmp_path):
    files = [
        metrics_json(tmp_path, "toy", 0.01, "zeta", 0, 9.0),
        metrics_json(tmp_path, "toy", 0.001, "ddpm", 0, 30.0),
        metrics_json(tmp_path, "toy", 0.01, "coral", 0, 4.0, tail_fid=8.0),
        metrics_json(tmp_path, "toy", 0.01, "coral", 1, 6.0, tail_fid=12.0),
        metrics_json(tmp_path, "toy", 0.01, "ddpm", 0, 7.0),
        metrics_json(tmp_path, "toy", 0.01, "cbdm", 0, 5.0),
    ]
    table = main_table(files, tmp_path / "main.csv")
    assert list(zip(table["rho"], table["method"])) == [
        (0.01, "ddpm"), (0.01, "cbdm"), (0.01, "coral"), (0.01, "zeta"), (0.001, "ddpm")]
    coral = table[table["method"] == "coral"].iloc[0]
    assert coral["num_seeds"] == 2
    assert coral["fid_mean"] == pytest.approx(5.0)
    assert coral["fid_std"] == pytest.approx(math.sqrt(2))  # sample std of 4 and 6
    assert coral["kid_mean"] == pytest.approx(0.05) and coral["isc_mean"] == pytest.approx(0.5)
    assert coral["tail_fid_mean"] == pytest.approx(10.0) and coral["tail_fid_std"] == pytest.approx(math.sqrt(8))
    assert coral["tail_accuracy_mean"] == pytest.approx(0.25) and coral["head_accuracy_mean"] == pytest.approx(0.75)
    assert coral["prd_f8_std"] == pytest.approx(0.0)
    assert (coral["sampler"], coral["steps"], coral["omega"], coral["feature_extractor"]) == (
        "ddim", 50, 1.0, "toy-classifier")
    assert list(table.columns[:6]) == ["dataset", "rho", "method", "num_seeds", "fid_mean", "fid_std"]

    written = pd.read_csv(tmp_path / "main.csv", keep_default_na=False)
    ddpm = written[(written["method"] == "ddpm") & (written["rho"] == 0.01)].iloc[0]
    assert ddpm["fid_std"] == "" and float(ddpm["fid_mean"]) == 7.0  # one seed: empty std


def test_main_table_rejects_mixed_settings_and_missing_keys(tmp_path):
    files = [metrics_json(tmp_path, "toy", 0.01, "coral", 0, 4.0, omega=1.0),
             metrics_json(tmp_path, "toy", 0.01, "coral", 1, 6.0, omega=2.0)]
    with pytest.raises(ValueError, match="'omega' differs across seeds"):
        main_table(files, tmp_path / "main.csv")
    with pytest.raises(ValueError, match="seed listed more than once"):
        main_table([files[0], files[0]], tmp_path / "main.csv")
    broken = json.loads(files[0].read_text())
    del broken["groups"]["tail"]["fid"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="broken.json: missing key 'groups.tail.fid'"):
        main_table([tmp_path / "broken.json"], tmp_path / "main.csv")
    assert not (tmp_path / "main.csv").exists()


# ---------------------------------------------------------------- per-class table

def per_class_csv(tmp_path, name, fids):
    # Label order is not frequency order here: class 2 is the head.
    frame = pd.DataFrame({"class": [0, 1, 2], "class_name": ["ant", "bee", "cat"], "train_count": [50, 5, 500],
                          "group": ["medium", "tail", "head"], "num_generated": 10, "num_real": 10,
                          "fid": fids, "kid_mean": [0.1, 0.2, 0.3], "kid_std": 0.01, "precision": 0.5,
                          "recall": 0.5, "accuracy": [1.0, 0.0, 0.5]})
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_per_class_table_means_and_head_to_tail_order(tmp_path):
    jsons = [metrics_json(tmp_path, "toy", 0.01, "coral", 0, 4.0), metrics_json(tmp_path, "toy", 0.01, "coral", 1, 6.0),
             metrics_json(tmp_path, "toy", 0.01, "ddpm", 0, 7.0)]
    csvs = [per_class_csv(tmp_path, "a.csv", [10.0, 20.0, 30.0]), per_class_csv(tmp_path, "b.csv", [12.0, 24.0, 36.0]),
            per_class_csv(tmp_path, "c.csv", [1.0, 2.0, 3.0])]
    # In reverse order: each CSV is paired with its run's JSON by key, not by position.
    table = per_class_table(dict(reversed(list(zip(csvs, jsons)))), tmp_path / "per_class.csv")
    assert list(zip(table["method"], table["class_name"])) == [
        ("ddpm", "cat"), ("ddpm", "ant"), ("ddpm", "bee"), ("coral", "cat"), ("coral", "ant"), ("coral", "bee")]
    coral = table[table["method"] == "coral"].set_index("class_name")
    assert coral.loc["bee", "fid_mean"] == pytest.approx(22.0)
    assert coral.loc["bee", "fid_std"] == pytest.approx(math.sqrt(8))
    assert coral.loc["cat", "kid_mean"] == pytest.approx(0.3) and coral.loc["cat", "num_seeds"] == 2
    assert coral.loc["ant", "group"] == "medium" and coral.loc["ant", "train_count"] == 50
    assert list(table.columns[:9]) == ["dataset", "rho", "method", "class", "class_name", "train_count",
                                       "group", "omega", "num_seeds"]
    assert set(table["omega"]) == {1.0}  # every row records the guidance its samples were made with
    with pytest.raises(TypeError, match="mapping of per-class CSV -> metrics JSON"):
        per_class_table(csvs, tmp_path / "per_class.csv")  # a list cannot say which run each CSV is
    with pytest.raises(ValueError, match="no files given"):
        per_class_table({}, tmp_path / "per_class.csv")


# ---------------------------------------------------------------- latent table

def test_latent_table_means(tmp_path):
    paths = []
    for seed, silhouette in [(0, 0.2), (1, 0.4)]:
        scores = {f"{i}{s}{g}": silhouette if s == "silhouette" else 0.9 for i in ("", "noised_")
                  for s in ("silhouette", "knn_purity") for g in ("", "_head", "_medium", "_tail")}
        scores["knn_purity_medium"] = None  # an empty group is written as null
        data = {"run": {"dataset": "toy", "rho": 0.01, "method": "coral", "variant": "coral", "seed": seed}, **scores,
                "t": 100, "knn_k": 10, "num_points": 1000}
        paths.append(tmp_path / f"sep{seed}.json")
        paths[-1].write_text(json.dumps(data))
    row = latent_table(paths, tmp_path / "latent.csv").iloc[0]
    assert row["silhouette_tail_mean"] == pytest.approx(0.3)
    assert row["silhouette_std"] == pytest.approx(math.sqrt(0.02))
    assert row["knn_purity_mean"] == pytest.approx(0.9) and math.isnan(row["knn_purity_medium_mean"])
    assert (row["t"], row["knn_k"], row["num_seeds"]) == (100, 10, 2)


def test_markdown_formats_numbers_and_blanks():
    text = markdown(pd.DataFrame({"method": ["coral"], "fid": [5.123456], "std": [float("nan")]}), digits=3)
    assert text.splitlines() == ["| method | fid | std |", "|---|---|---|", "| coral | 5.12 |  |"]


# ---------------------------------------------------------------- image grids

def test_image_grid_rows_hold_classes():
    # 2 classes x 2 images of 1x2x2; image value = 10 * label + order within the class.
    labels = np.array([1, 0, 1, 0])
    images = np.array([10, 0, 11, 1], dtype=np.uint8)[:, None, None, None].repeat(2, 2).repeat(2, 3)
    grid = image_grid(images, labels, num_classes=2, per_row=2, scale=1)
    assert grid.shape == (7, 7, 1)
    cells = {(r, j): grid[1 + 3 * r:3 + 3 * r, 1 + 3 * j:3 + 3 * j, 0] for r in range(2) for j in range(2)}
    for (r, j), cell in cells.items():
        assert (cell == 10 * r + j).all()
    assert (grid[0] == 128).all() and (grid[:, 3] == 128).all()  # 1-pixel gray padding


def test_image_grid_upscales_caps_rows_and_fills_gaps():
    images = np.zeros((3, 3, 4, 4), dtype=np.uint8)
    images[:, 0] = 255
    grid = image_grid(images, np.array([0, 0, 1]), num_classes=2, per_row=2, scale=2)
    assert grid.shape == (2 * 9 + 1, 2 * 9 + 1, 3)
    assert (grid[1:9, 1:9] == [255, 0, 0]).all()  # red 4x4 image shown as 8x8
    assert (grid[10:18, 10:18] == 128).all()       # class 1 has only one image: gray cell
    many = image_grid(np.zeros((100, 1, 2, 2), np.uint8), np.arange(100), num_classes=100, per_row=1, scale=1)
    assert many.shape[0] == 20 * 3 + 1  # at most 20 classes shown
    auto = image_grid(np.zeros((1, 1, 16, 16), np.uint8), np.array([0]), num_classes=1, per_row=1)
    assert auto.shape[:2] == (34, 34)  # 16x16 upscaled twice to reach a 32-pixel cell


def test_save_grid_png_writes_image(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    save_grid_png(images, np.arange(20) % 4, 4, tmp_path / "grid.png", per_row=5, class_names=list("abcd"))
    with Image.open(tmp_path / "grid.png") as picture:
        assert picture.height == 4 * 33 + 1 and picture.width > 5 * 33 + 1  # plus a name margin


# ---------------------------------------------------------------- figures

def png_size(path) -> tuple[int, int]:
    """(width, height) of a file that must be a valid PNG."""
    with Image.open(path) as picture:
        assert picture.format == "PNG", path
        picture.verify()
        return picture.size


def test_per_class_fid_figure_draws_the_rows_of_one_setting(tmp_path):
    def runs(settings):
        return {per_class_csv(tmp_path, f"{dataset}-{rho}-{m}.csv", [10.0, 20.0, 30.0] if rho else [5.0, 6.0, 7.0]):
                metrics_json(tmp_path, dataset, rho, m, 0, 4.0) for dataset, rho in settings for m in ("coral", "ddpm")}

    settings = [("toy", 0.01), ("toy", 0.001), ("nat", None)]  # nat: long-tailed as published, no rho
    per_class_table(runs(settings), tmp_path / "per_class.csv")
    per_class_table(runs(settings[:1]), tmp_path / "only_toy.csv")
    per_class_fid_figure(tmp_path / "per_class.csv", tmp_path / "fid.png", setting="toy-rho0.01")
    per_class_fid_figure(tmp_path / "only_toy.csv", tmp_path / "only_toy.png", setting="toy-rho0.01")
    per_class_fid_figure(tmp_path / "per_class.csv", tmp_path / "all.png")
    width, height = png_size(tmp_path / "fid.png")
    assert width > 200 and height > 200
    assert png_size(tmp_path / "all.png")[1] > 2.5 * height  # every setting: three panels; a setting: one
    # the other settings' rows leave no trace: the same picture as from a table of that setting alone
    assert (tmp_path / "fid.png").read_bytes() == (tmp_path / "only_toy.png").read_bytes()
    per_class_fid_figure(tmp_path / "per_class.csv", tmp_path / "nat.png", setting="nat")
    assert png_size(tmp_path / "nat.png")[1] < 1.5 * height
    with pytest.raises(ValueError, match="no rows of setting 'toy-rho0.1'"):
        per_class_fid_figure(tmp_path / "per_class.csv", tmp_path / "none.png", setting="toy-rho0.1")
    assert not (tmp_path / "none.png").exists()


def test_tsne_and_samples_figures(tmp_path):
    rng = np.random.default_rng(0)
    names = ["ant", "bee", "cat"]
    npzs, jsons = [], []
    for method in ("ddpm", "coral"):
        npzs.append(tmp_path / f"{method}.npz")
        np.savez(npzs[-1], tsne=rng.normal(size=(30, 2)), labels=np.arange(30) % 3,
                 groups=np.array(["head", "medium", "tail"]), class_names=np.array(names))
        jsons.append(tmp_path / f"{method}.json")
        jsons[-1].write_text(json.dumps({"silhouette": 0.1, "silhouette_tail": None,
                                         "knn_purity": 0.5, "knn_purity_tail": 0.4}))
    panels = {"ddpm": {"features": npzs[0], "separation": jsons[0]}, "coral": {"features": npzs[1], "separation": jsons[1]}}
    tsne_figure(panels, names, [100, 10, 1], tmp_path / "tsne.png")
    width, height = png_size(tmp_path / "tsne.png")
    assert width > height > 100
    tsne_figure({"coral": {"features": npzs[1]}}, names, [100, 10, 1], tmp_path / "one.png")  # no scores
    assert png_size(tmp_path / "one.png")[0] < width / 1.5
    with pytest.raises(ValueError, match="class names"):
        tsne_figure(panels, ["x", "y", "z"], [100, 10, 1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="non-empty mapping"):
        tsne_figure(npzs, names, [100, 10, 1], tmp_path / "bad.png")  # a list cannot say which method is which
    with pytest.raises(ValueError, match="needs a 'features' file"):
        tsne_figure({"coral": {"separation": jsons[1]}}, names, [100, 10, 1], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()

    images = rng.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", images=images, labels=np.arange(12) % 3,
             meta=np.array(json.dumps({"run": {"method": "coral"}})))
    samples_figure(tmp_path / "samples.npz", tmp_path / "samples.png")
    with Image.open(tmp_path / "samples.png") as picture:
        assert picture.size == (10 * 33 + 1, 3 * 33 + 1)  # 8x8 upscaled to 32, 10 per row, 3 classes


def test_tsne_run_figure_is_the_panel_of_one_run(tmp_path):
    """A run's own t-SNE: its features file alone gives the classes, their counts and the title."""
    rng = np.random.default_rng(1)
    names, counts = ["ant", "bee", "cat"], [100, 10, 1]
    run = {"setting": "toy-rho0.01", "dataset": "toy", "rho": 0.01, "method": "coral", "variant": "coral", "seed": 2}
    np.savez(tmp_path / "features.npz", tsne=rng.normal(size=(30, 2)), labels=np.arange(30) % 3,
             groups=np.array(["head", "medium", "tail"]), class_names=np.array(names), class_counts=np.array(counts),
             meta=np.array(json.dumps({"run": run, "t": 100})))
    (tmp_path / "separation.json").write_text(json.dumps({"silhouette": 0.1, "silhouette_tail": -0.2,
                                                          "knn_purity": 0.5, "knn_purity_tail": 0.4}))
    tsne_run_figure(tmp_path / "features.npz", tmp_path / "separation.json", tmp_path / "run" / "seed2.png")
    width, height = png_size(tmp_path / "run" / "seed2.png")
    assert 300 < width < 1000 and 300 < height < 1000  # one 4.2-inch panel and the legend at 120 dpi
    # the same picture as one panel of tsne_figure titled by the run (what the latent stage drew before)
    tsne_figure({"coral (toy-rho0.01, seed 2, t=100)": {"features": tmp_path / "features.npz",
                                                "separation": tmp_path / "separation.json"}},
                names, counts, tmp_path / "panel.png")
    assert (tmp_path / "run" / "seed2.png").read_bytes() == (tmp_path / "panel.png").read_bytes()


# ---------------------------------------------------------------- ablations and published numbers

def test_ablation_table_rows_follow_points_and_average_seeds(tmp_path):
    points = {}
    for value, variant, fids in [(0.05, "coral~tau_sc=0.05", [4.0, 6.0]), (0.1, "coral", [3.0, 5.0])]:
        for seed, fid in enumerate(fids):
            points[metrics_json(tmp_path, "toy", 0.01, variant, seed, fid)] = value
    table = ablation_table("tau_sc", "objectives.coral.tau_sc", points, tmp_path / "ablation.csv")
    assert table["value"].tolist() == ["0.05", "0.1"] and table["run"].tolist() == ["coral~tau_sc=0.05", "coral"]
    assert table["fid_mean"].tolist() == [5.0, 4.0]
    assert table["fid_std"].tolist() == pytest.approx([math.sqrt(2), math.sqrt(2)])
    assert set(table["study"]) == {"tau_sc"} and set(table["key"]) == {"objectives.coral.tau_sc"}
    written = pd.read_csv(tmp_path / "ablation.csv")
    assert written["fid_mean"].tolist() == [5.0, 4.0]
    ablation_figure(tmp_path / "ablation.csv", tmp_path / "ablation.png")
    with Image.open(tmp_path / "ablation.png") as picture:
        assert picture.width > 600


def test_ablation_figure_of_a_method_comparison(tmp_path):
    points = {metrics_json(tmp_path, "toy", 0.01, m, 0, fid): m
              for m, fid in [("coral", 3.0), ("coral_ambient", 4.0)]}
    table = ablation_table("latent_vs_ambient", None, points, tmp_path / "a.csv")
    assert table["key"].tolist() == ["method", "method"] and table["fid_mean"].tolist() == [3.0, 4.0]
    ablation_figure(tmp_path / "a.csv", tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_paper_vs_ours_pairs_cells_and_differences(tmp_path):
    files = [metrics_json(tmp_path, "cifar10", 0.01, "coral", seed, fid) for seed, fid in [(0, 5.0), (1, 6.0)]]
    files.append(metrics_json(tmp_path, "animals", 0.01, "coral", 0, 2.0))  # no published counterpart
    main_table(files, tmp_path / "main.csv")
    published = tmp_path / "published.csv"
    published.write_text("setting,metric,method,value,source\n"
                         "cifar10-rho0.01,FID,coral,5.32,paper\ncifar10-rho0.01,IS,coral,9.69,paper\n"
                         "cifar10-rho0.01,FID,ddpm,6.17,paper\n")
    table = paper_vs_ours(tmp_path / "main.csv", published, tmp_path / "pvo.csv", tmp_path / "pvo.md")
    assert table[["setting", "metric", "method"]].values.tolist() == [["cifar10-rho0.01", "FID", "coral"],
                                                                      ["cifar10-rho0.01", "IS", "coral"]]
    assert table["ours"].tolist() == pytest.approx([5.5, 0.55])  # isc = fid / 10 in metrics_json
    assert table["difference"].tolist() == pytest.approx([5.5 - 5.32, 0.55 - 9.69])
    assert table["num_seeds"].tolist() == [2, 2] and not table["comparable"].any()  # toy, not Inception
    assert "| cifar10-rho0.01 | FID | coral | 5.32 | 5.5 |" in (tmp_path / "pvo.md").read_text()


def test_paper_vs_ours_without_shared_cells_says_so(tmp_path):
    main_table([metrics_json(tmp_path, "animals", 0.01, "coral", 0, 2.0)], tmp_path / "main.csv")
    published = tmp_path / "published.csv"
    published.write_text("setting,metric,method,value,source\ncifar10-rho0.01,FID,coral,5.32,paper\n")
    table = paper_vs_ours(tmp_path / "main.csv", published, tmp_path / "pvo.csv", tmp_path / "pvo.md")
    assert table.empty and "No setting of this run has published numbers" in (tmp_path / "pvo.md").read_text()
    assert list(pd.read_csv(tmp_path / "pvo.csv").columns)[:4] == ["setting", "metric", "method", "published"]


def test_published_numbers_match_spec_section_7():
    from importlib.resources import files
    published = pd.read_csv(files("coral") / "published" / "coral_neurips2025.csv")
    spec = {("cifar10-rho0.01", "FID"): [5.32, 6.17, 5.62, 7.01], ("cifar10-rho0.001", "FID"): [11.03, 13.05, 12.74, 12.80],
            ("cifar100-rho0.01", "IS"): [13.53, 13.20, 12.92, 12.97], ("celeba5", "FID"): [8.12, 10.28, 8.74, 9.50],
            ("imagenet_lt", "Recall"): [0.48, 0.39, 0.42, 0.44]}
    for (setting, metric), values in spec.items():
        cells = published[(published["setting"] == setting) & (published["metric"] == metric)].set_index("method")
        assert cells.loc[["coral", "ddpm", "cbdm", "t2h"], "value"].tolist() == values
    assert len(published) == 40 and not published.duplicated(["setting", "metric", "method"]).any()


def test_omega_tuned_picks_on_the_selection_half_and_reports_on_the_other(tmp_path):
    """DDPM's selection-half FID is lowest at omega 2 (means 5.5 vs 6.5 at 1), though its report-half FID
    is lowest at 1: the tuned omega is 2 and the reported gain is negative, as the rule demands."""
    halves = {("ddpm", 1.0): [(6, 7), (7, 8)], ("ddpm", 2.0): [(5, 9), (6, 10)],
              ("coral", 1.0): [(4, 4), (4, 6)], ("coral", 2.0): [(5, 3), (6, 3)]}
    files = [metrics_json(tmp_path, "toy", 0.01, method, seed, 1.0, omega=omega, halves=pair)
             for (method, omega), pairs in halves.items() for seed, pair in enumerate(pairs)]
    table = omega_tuned_table(files, {"ddpm": 1.0, "coral": 1.0}, tmp_path / "omega_tuned.csv").set_index("method")
    assert list(table.index) == ["ddpm", "coral"]
    assert table.loc["ddpm", "omega_tuned"] == 2.0 and table.loc["coral", "omega_tuned"] == 1.0
    assert table.loc["ddpm", "report_fid_fixed_mean"] == pytest.approx(7.5)
    assert table.loc["ddpm", "report_fid_tuned_mean"] == pytest.approx(9.5)
    assert table.loc["ddpm", "gain"] == pytest.approx(-2.0)
    assert table.loc["ddpm", "report_fid_tuned_std"] == pytest.approx(math.sqrt(0.5))
    assert table.loc["coral", "gain"] == 0.0 and table.loc["coral", "omegas"] == "1, 2"
    assert pd.read_csv(tmp_path / "omega_tuned.csv")["num_seeds"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="no sample set at its fixed omega 1.5"):
        omega_tuned_table(files, {"ddpm": 1.5, "coral": 1.0}, None)
    old = metrics_json(tmp_path, "toy", 0.01, "t2h", 0, 1.0)
    with pytest.raises(ValueError, match="no reference_halves"):
        omega_tuned_table([old], {"t2h": 1.0}, None)
