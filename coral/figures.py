"""Figures for the report: per-class FID, t-SNE of the bottleneck, sample grids, training curves. Never
imports torch.

Figures are drawn on bare `matplotlib.figure.Figure` objects, which render PNGs with the Agg
backend on a headless machine without touching pyplot or the caller's backend. Each method has one colour in every figure (`method_color`).
"""
from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from coral import lineage
from coral.grid import setting_name
from coral.sample_grids import save_grid_png
from coral.io import atomic_path
from coral.methods import COLOURS, NAMES

EXTRA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
GROUP_SHADES = {"head": "#e8f0fa", "medium": "#f5f5f5", "tail": "#fbe9e7"}
MAX_TICK_LABELS = 30
MAX_LEGEND_CLASSES = 20


def method_color(method: str) -> str:
    """The fixed colour of a method (coral.methods); others get a stable colour from their name."""
    if method in COLOURS:
        return COLOURS[method]
    return EXTRA_COLORS[zlib.crc32(method.encode()) % len(EXTRA_COLORS)]


def _ordered_methods(methods) -> list[str]:
    known = [m for m in NAMES if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def _save(fig: Figure, out_png: str | os.PathLike) -> None:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _shade_groups(ax, groups: Sequence[str]) -> None:
    """Shade the head / medium / tail stretch of an x axis whose positions 0..C-1 are classes head->tail."""
    groups = np.asarray(groups)
    for group, shade in GROUP_SHADES.items():
        positions = np.flatnonzero(groups == group)
        if len(positions):
            ax.axvspan(positions.min() - 0.5, positions.max() + 0.5, color=shade, zorder=0)
            ax.text(positions.mean(), 0.98, group, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9, color="#555555")


def per_class_fid_figure(per_class: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike,
                         setting: str | None = None) -> None:
    """Per-class FID, one panel per (dataset, rho), one line per method (band: +-1 std over seeds).

    per_class: the table of coral.tables.per_class_table, or its CSV (columns dataset, rho, method,
    class, class_name, train_count, group, fid_mean, fid_std). setting: draw only that setting's
    rows (its name as coral.config.setting_name gives it, e.g. cifar10-rho0.01; ValueError when the
    table has none); None draws every setting. Classes run head -> tail along x (train_count
    descending); with many classes only about 30 tick labels are shown.
    """
    if isinstance(per_class, pd.DataFrame):
        df = per_class
    else:
        with lineage.reading(per_class, "the per-class table", "per_class_table"):
            df = pd.read_csv(per_class)
    per_class_csv = "per-class table" if isinstance(per_class, pd.DataFrame) else per_class
    required = ["dataset", "rho", "method", "class", "class_name", "train_count", "group", "fid_mean", "fid_std"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{per_class_csv}: missing columns {missing}; expected the output of "
                         f"coral.tables.per_class_table with {required}")
    if setting is not None:
        names = [setting_name(dataset, None if pd.isna(rho) else rho) for dataset, rho in zip(df["dataset"], df["rho"])]
        df = df[np.array([name == setting for name in names], dtype=bool)]
        if df.empty:
            raise ValueError(f"{per_class_csv}: no rows of setting {setting!r}; "
                             f"it holds {sorted(set(names))}")
    df = df.assign(rho=df["rho"].fillna(-1.0))  # -1: a dataset long-tailed as published (no rho)
    settings = list(df[["dataset", "rho"]].drop_duplicates().itertuples(index=False, name=None))
    num_classes = df.groupby(["dataset", "rho"])["class"].nunique().max()
    width = min(max(6.0, 0.4 * num_classes), 16.0)
    fig = Figure(figsize=(width, 3.6 * len(settings)))
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    for ax, (dataset, rho) in zip(axes, settings):
        panel = df[(df["dataset"] == dataset) & (df["rho"] == rho)]
        classes = (panel.drop_duplicates("class")
                   .sort_values(["train_count", "class"], ascending=[False, True], kind="stable"))
        x = np.arange(len(classes))
        _shade_groups(ax, classes["group"].tolist())
        for method in _ordered_methods(panel["method"]):
            rows = panel[panel["method"] == method].set_index("class").reindex(classes["class"])
            mean, std = rows["fid_mean"].to_numpy(float), rows["fid_std"].to_numpy(float)
            ax.plot(x, mean, marker="o", markersize=3, color=method_color(method), label=method)
            ax.fill_between(x, mean - std, mean + std, color=method_color(method), alpha=0.15, linewidth=0)
        ticks = x if len(x) <= MAX_TICK_LABELS else np.unique(np.linspace(0, len(x) - 1, MAX_TICK_LABELS).astype(int))
        ax.set_xticks(ticks, classes["class_name"].to_numpy()[ticks], rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_title(dataset if rho < 0 else f"{dataset}, rho={rho:g}")
        ax.set_ylabel("per-class FID")
        ax.set_xlabel("class (head -> tail, by training count)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    _save(fig, out_png)


def _class_colors(class_counts: Sequence[int]) -> np.ndarray:
    """RGBA (C, 4) colours by rank head -> tail: tab10 / tab20 for few classes, viridis for many."""
    num_classes = len(class_counts)
    rank = np.empty(num_classes, dtype=int)
    rank[np.argsort(-np.asarray(class_counts), kind="stable")] = np.arange(num_classes)
    if num_classes <= 20:
        cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        return cmap(rank)
    return matplotlib.colormaps["viridis"](rank / (num_classes - 1))


def _score_title(method: str, scores: dict | None) -> str:
    if scores is None:
        return method

    def fmt(key: str) -> str:
        return "n/a" if scores.get(key) is None else f"{scores[key]:.3f}"
    return (f"{method}\nsilhouette {fmt('silhouette')} (tail {fmt('silhouette_tail')})\n"
            f"kNN purity {fmt('knn_purity')} (tail {fmt('knn_purity_tail')})")


def tsne_figure(panels: Mapping[str, Mapping[str, str | os.PathLike]], class_names: Sequence[str],
                class_counts: Sequence[int], out_png: str | os.PathLike) -> None:
    """Side-by-side t-SNE panels, one per entry of `panels`, each class one colour in every panel.

    panels: panel title (a method) -> {"features": a file written by coral.latent.run_latent (tsne
    (N, 2), labels (N,), groups (C,), class_names (C,)), optionally "separation": that run's
    separation JSON}, in panel order. Colours follow the class's rank by class_counts (head -> tail);
    tail classes are drawn as larger triangles. A panel with a separation JSON also shows silhouette
    and kNN purity, overall and tail, in its title.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError(f"tsne_figure: panels must be a non-empty mapping of title -> files, got {panels!r}")
    for title, files in panels.items():
        unknown = sorted(set(files) - {"features", "separation"})
        if "features" not in files or unknown:
            raise ValueError(f"tsne_figure: panel {title!r} needs a 'features' file (and at most a 'separation' "
                             f"JSON), got keys {sorted(files)}")
    if len(class_counts) != len(class_names):
        raise ValueError(f"tsne_figure: {len(class_names)} class names but {len(class_counts)} class counts")
    colors = _class_colors(class_counts)
    fig = Figure(figsize=(4.2 * len(panels) + 1.8, 4.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    groups = None
    for ax, (method, files) in zip(axes, panels.items()):
        path = files["features"]
        with lineage.reading(path, "the latent features file", "latent"), np.load(path, allow_pickle=False) as z:
            tsne, labels, groups, names = z["tsne"], z["labels"], z["groups"], z["class_names"]
        if [str(s) for s in names] != list(class_names):
            raise ValueError(f"{path}: class names {list(names)} differ from {list(class_names)}")
        tail = groups[labels] == "tail"
        ax.scatter(*tsne[~tail].T, c=colors[labels[~tail]], s=6, marker="o", linewidths=0)
        ax.scatter(*tsne[tail].T, c=colors[labels[tail]], s=22, marker="^", linewidths=0)
        scores = lineage.read_json_artifact(files["separation"], "the latent scores file", "latent") \
            if files.get("separation") is not None else None
        ax.set_title(_score_title(method, scores), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(class_names) <= MAX_LEGEND_CLASSES:
        handles = [Line2D([], [], linestyle="", marker="^" if groups[c] == "tail" else "o", color=colors[c],
                          markersize=6, label=f"{name} (tail)" if groups[c] == "tail" else name)
                   for c, name in enumerate(class_names)]
        fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    else:
        fig.suptitle("colour: class rank head (dark) -> tail (yellow); triangles: tail classes", fontsize=9)
        fig.tight_layout()
    _save(fig, out_png)


def tsne_run_figure(features_npz: str | os.PathLike, separation_json: str | os.PathLike,
                    out_png: str | os.PathLike) -> None:
    """The t-SNE scatter of one run (coral.latent.run_latent's features file and separation JSON):
    one tsne_figure panel titled "<method> (<setting>, seed <seed>, t=<t>)" with the run's scores,
    classes coloured by the rank of the split's class counts stored in the features file."""
    with lineage.reading(features_npz, "the latent features file", "latent"), \
            np.load(features_npz, allow_pickle=False) as z:
        class_names, class_counts = [str(s) for s in z["class_names"]], z["class_counts"].tolist()
        meta = json.loads(str(z["meta"]))
    run = meta["run"]
    title = f"{run['variant']} ({run['setting']}, seed {run['seed']}, t={meta['t']})"
    tsne_figure({title: {"features": features_npz, "separation": separation_json}}, class_names, class_counts,
                out_png)


def samples_figure(samples_npz: str | os.PathLike, out_png: str | os.PathLike, per_row: int = 10) -> None:
    """A class-by-row grid of the first `per_row` samples of each class (coral.sample_grids.save_grid_png).

    samples_npz: images uint8 (N, C, H, W), labels int64 (N,), meta (JSON string); the number of
    classes and their names come from meta's "num_classes" / "class_names" when present.
    """
    with lineage.reading(samples_npz, "the samples file", "sample"), np.load(samples_npz, allow_pickle=False) as z:
        images, labels, meta = z["images"], z["labels"], json.loads(str(z["meta"]))
    num_classes = meta.get("num_classes", int(labels.max()) + 1)
    save_grid_png(images, labels, num_classes, out_png, per_row=per_row, class_names=meta.get("class_names"))


ABLATION_PANELS = {"fid": "FID", "tail_fid": "tail FID", "tail_accuracy": "tail accuracy"}


def ablation_figure(ablation_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """One panel per metric (FID, tail FID, tail accuracy) against the ablated value, a line (or,
    for a study without numeric values, bars) per method; error bars +-1 std over seeds.

    ablation_csv: the table of coral.tables.ablation_table (study, key, method, value, <m>_mean, <m>_std).
    """
    df = pd.read_csv(ablation_csv, dtype={"value": str})
    required = ["study", "key", "method", "value"] + [f"{m}_{s}" for m in ABLATION_PANELS for s in ("mean", "std")]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{ablation_csv}: missing columns {missing}; expected the output of coral.tables.ablation_table")
    values = list(dict.fromkeys(df["value"]))
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").notna().all()
    methods = _ordered_methods(df["method"])
    fig = Figure(figsize=(4.0 * len(ABLATION_PANELS), 3.4))
    axes = fig.subplots(1, len(ABLATION_PANELS))
    compares_methods = df["key"].iloc[0] == "method"  # each method is its own value: one bar each
    width = 0.6 if compares_methods else 0.8 / len(methods)
    for ax, (metric, label) in zip(axes, ABLATION_PANELS.items()):
        for i, method in enumerate(methods):
            rows = df[df["method"] == method].set_index("value").reindex(values)
            mean, std = rows[f"{metric}_mean"].to_numpy(float), rows[f"{metric}_std"].to_numpy(float)
            x = np.arange(len(values))
            if numeric:
                ax.errorbar(x, mean, yerr=np.nan_to_num(std), marker="o", capsize=3, color=method_color(method),
                            label=method)
            else:
                offset = 0.0 if compares_methods else (i - (len(methods) - 1) / 2) * width
                ax.bar(x + offset, mean, width, yerr=np.nan_to_num(std), capsize=3,
                       color=method_color(method), label=method)
        ax.set_xticks(np.arange(len(values)), values)
        ax.set_xlabel(df["key"].iloc[0])
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"ablation: {df['study'].iloc[0]} ({df['dataset'].iloc[0]}, mean over {int(df['num_seeds'].max())} "
                 "seed(s))", fontsize=10)
    fig.tight_layout()
    _save(fig, out_png)


# ---------------------------------------------------------------- training curves

NOT_CURVES = ("step", "lr")  # the x axis; the learning rate is the same schedule for every method
LAST_CURVES = ("grad_norm", "img_per_s")  # after the loss terms, in this order
CURVE_LABELS = {
    "loss": "loss (optimised)", "mse": "noise-prediction MSE", "cb_reg": "CBDM regulariser",
    "cb_commit": "CBDM commitment", "t2h_transfer_rate": "T2H label transfer rate", "supcon": "SupCon loss",
    "coral_term": "CORAL term (lambda(t) x SupCon)", "grad_norm": "gradient norm (before clipping)",
    "img_per_s": "throughput (images / s)",
}
LOG_SCALE_SPAN = 10.0  # a panel whose positive values span more than this factor gets a log y axis


def read_training_stats(runs: Mapping[str | os.PathLike, Mapping]) -> pd.DataFrame:
    """The stats.jsonl of runs (coral.train: one JSON object per log step) as one long table.

    runs: stats.jsonl path -> {"method": ..., "seed": ...}. Returns the columns method, seed, step,
    quantity, value: a row per logged value, every key of a line but `step` and `lr` (NOT_CURVES),
    in the file's order. A file that is empty, or a line that is not a JSON object with a step, is a
    ValueError naming the file and line.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"read_training_stats: runs must be a non-empty mapping of stats.jsonl -> "
                         f"{{'method', 'seed'}}, got {runs!r}")
    rows = []
    for path, run in runs.items():
        if not isinstance(run, Mapping) or not {"method", "seed"} <= set(run):
            raise ValueError(f"read_training_stats: {path} needs a method and a seed, got {run!r}")
        with open(path) as f:
            lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
        if not lines:
            raise ValueError(f"{path}: no logged steps (an empty stats file)")
        for number, line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError(f"{path}, line {number}: not a stats line with an integer step: {line.strip()[:80]}")
            rows += [(run["method"], run["seed"], record["step"], key, value)
                     for key, value in record.items() if key not in NOT_CURVES]
    table = pd.DataFrame(rows, columns=["method", "seed", "step", "quantity", "value"])
    table["value"] = pd.to_numeric(table["value"], errors="coerce").astype(float)
    return table


def training_curve_quantities(stats: pd.DataFrame) -> list[str]:
    """The panels of a training-curves figure, in order: every quantity any method logs, in the order
    the methods (coral.methods) first log them, then gradient norm and throughput."""
    order = [q for method in _ordered_methods(stats["method"])
             for q in stats.loc[stats["method"] == method, "quantity"].unique()]
    order = list(dict.fromkeys(order))
    return [q for q in order if q not in LAST_CURVES] + [q for q in LAST_CURVES if q in order]


def training_curve_bands(stats: pd.DataFrame) -> pd.DataFrame:
    """Mean, minimum and maximum over seeds of each method, quantity and step.

    stats: the long table of read_training_stats. Returns method, quantity, step, mean, low (min over
    seeds), high (max over seeds), num_seeds (the seeds with a value there), sorted by step within each
    method and quantity. A quantity a method does not log has no rows for it.
    """
    values = stats.dropna(subset=["value"])
    grouped = values.groupby(["method", "quantity", "step"], sort=False)["value"]
    bands = grouped.agg(mean="mean", low="min", high="max", num_seeds="count").reset_index()
    return bands.sort_values(["method", "quantity", "step"], kind="stable").reset_index(drop=True)


def _training_curves_axes(stats: pd.DataFrame, title: str = "") -> Figure:
    """The training-curves figure of read_training_stats' table: one panel per quantity (titled by it,
    training_curve_quantities' order), one line per method that logs it (labelled by the method), the
    mean over seeds with a min-max band where a method has more than one seed."""
    quantities = training_curve_quantities(stats)
    if not quantities:
        raise ValueError("training curves: the stats hold no logged quantity")
    bands = training_curve_bands(stats)
    methods = _ordered_methods(stats["method"])
    columns = min(3, len(quantities))
    rows = math.ceil(len(quantities) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows + 0.8))
    grid = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in grid[len(quantities):]:
        fig.delaxes(ax)
    for ax, quantity in zip(grid, quantities):
        panel = bands[bands["quantity"] == quantity]
        for method in methods:
            curve = panel[panel["method"] == method]
            if curve.empty:
                continue
            color = method_color(method)
            ax.plot(curve["step"], curve["mean"], color=color, linewidth=1.2, label=method)
            if curve["num_seeds"].max() > 1:
                ax.fill_between(curve["step"], curve["low"], curve["high"], color=color, alpha=0.2, linewidth=0)
        values = panel[["low", "high"]].to_numpy(float)
        if quantity != "img_per_s" and len(values) and (values > 0).all() and \
                values.max() / values.min() > LOG_SCALE_SPAN:
            ax.set_yscale("log")
        ax.set_title(quantity, fontsize=10)
        ax.set_ylabel(CURVE_LABELS.get(quantity, quantity), fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
    handles = [Line2D([], [], color=method_color(m), linewidth=2, label=m) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=len(methods), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
    return fig


def training_curves_figure(runs: Mapping[str | os.PathLike, Mapping], out_png: str | os.PathLike,
                           setting: str | None = None) -> None:
    """Training curves of one setting's runs: one panel per logged quantity (each loss term any method
    logs, gradient norm, throughput) against the step, one line per method: the mean over its seeds,
    with a band from the minimum to the maximum over seeds where it has more than one.

    runs: each run's stats.jsonl (coral.train) -> {"method", "seed"} (read_training_stats).
    """
    stats = read_training_stats(runs)
    seeds = stats.groupby("method")["seed"].nunique()
    if seeds.min() == seeds.max():
        over = f"mean over {seeds.max()} seeds, band: min-max" if seeds.max() > 1 else "one seed"
    else:
        over = f"mean over {seeds.min()}-{seeds.max()} seeds, band: min-max"
    title = f"training curves{f': {setting}' if setting else ''} ({over})"
    _save(_training_curves_axes(stats, title), out_png)


VERDICT_COLOURS = {"holds": "#2e7d32", "contradicted": "#c62828", "inconclusive": "#757575"}


def _claims_axes(rows: pd.DataFrame) -> Figure:
    """One panel per metric; a line per claim row: its effect (a dot) and 95% interval (a bar), coloured
    by verdict, with the zero line. An effect > 0 supports the claim; a row without an interval (one
    seed) is a hollow dot."""
    rows = rows[rows["verdict"] != "not covered"]
    metrics = list(dict.fromkeys(rows["metric"]))
    heights = [max(1, (rows["metric"] == m).sum()) for m in metrics]
    fig = Figure(figsize=(8, 0.9 + 0.32 * sum(heights) + 0.5 * len(metrics)))
    axes = fig.subplots(len(metrics), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, metric in zip(axes, metrics):
        panel = rows[rows["metric"] == metric].reset_index(drop=True)
        y = np.arange(len(panel))[::-1]
        for position, row in zip(y, panel.itertuples()):
            colour = VERDICT_COLOURS[row.verdict]
            if math.isfinite(row.low):
                ax.plot([row.low, row.high], [position, position], color=colour, linewidth=2)
            ax.plot(row.effect, position, "o", color=colour, markerfacecolor=colour if math.isfinite(row.low) else "white")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [f"{r.claim}  {r.setting}  {r.comparison}" for r in panel.itertuples()], fontsize=8)
        ax.set_ylim(-0.7, len(panel) - 0.3)
        ax.set_title(f"{metric}: effect (> 0 supports the claim)", fontsize=9, loc="left")
    handles = [Line2D([], [], color=c, marker="o", label=v) for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, ncols=3)
    fig.suptitle("The paper's claims: paired effects over seeds, 95% t intervals", x=0.01, ha="left", fontsize=10)
    fig.tight_layout()
    return fig


def claims_figure(claims_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """The forest plot of results/tables/claims.csv (checked against its lineage record)."""
    with lineage.reading(claims_csv, "the claims table", "claims"):
        rows = pd.read_csv(claims_csv)
    if (rows["verdict"] == "not covered").all():
        fig = Figure(figsize=(6, 1.2))
        fig.text(0.02, 0.5, "No claim is covered by this preset's runs.", va="center")
        _save(fig, out_png)
        return
    _save(_claims_axes(rows), out_png)
