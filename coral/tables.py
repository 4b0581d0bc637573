"""Result tables: one row per setting and method, mean and spread over seeds.

Reads the metrics JSONs, per-class CSVs and separation JSONs of single runs; never imports torch.
Conventions for every table:
- rows are ordered by dataset (alphabetical), rho (descending: milder imbalance first), method
  (coral.methods' order, then any other method alphabetically);
- `<name>_mean` is the mean over seeds and `<name>_std` the sample standard deviation over seeds
  (ddof=1); with a single seed the std is NaN, written as an empty CSV cell. A metric missing
  (null) in any seed gives NaN for that row rather than a mean over fewer seeds.
"""
from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from coral import identity, lineage, methods
from coral.columns import PER_CLASS_COLUMNS
from coral.grid import setting_name
from coral.io import atomic_path

SETTING = ["dataset", "rho", "method"]

# Main-table column name -> where it lives in a metrics JSON.
MAIN_METRICS = {
    "fid": ("overall", "fid"),
    "isc": ("overall", "isc_mean"),
    "kid": ("overall", "kid_mean"),
    "precision": ("overall", "precision"),
    "recall": ("overall", "recall"),
    "prd_f8": ("overall", "prd_f8"),
    "prd_f1_8": ("overall", "prd_f1_8"),
    "tail_fid": ("groups", "tail", "fid"),
    "tail_kid": ("groups", "tail", "kid_mean"),
    "tail_accuracy": ("groups", "tail", "accuracy"),
    "head_fid": ("groups", "head", "fid"),
    "head_accuracy": ("groups", "head", "accuracy"),
}
# How the images were made and scored; must agree across the seeds of one row.
SAMPLING = {
    "sampler": ("sampling", "sampler"),
    "steps": ("sampling", "steps"),
    "eta": ("sampling", "eta"),
    "omega": ("sampling", "omega"),
    "num_samples": ("sampling", "num_samples"),
    "feature_extractor": ("feature_extractor",),
}
PER_CLASS_METRICS = ["fid", "kid", "precision", "recall", "accuracy"]
CLASS_INFO = ["class_name", "train_count", "group"]
# Separation of the clean images' features (the released code's way) and of the noised images' (noised_*).
LATENT_SCORES = [f"{inputs}{score}{suffix}" for inputs in ("", "noised_") for score in ("silhouette", "knn_purity")
                 for suffix in ("", "_head", "_medium", "_tail")]
LATENT_SETTINGS = ["t", "knn_k", "num_points"]


def _lookup(obj: dict, keys: Sequence[str], path: str | os.PathLike):
    """obj[k1][k2]...; a missing key is a ValueError naming the file and the dotted key."""
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"{path}: missing key {'.'.join(keys)!r}")
        obj = obj[key]
    return obj


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _run_record(path: str | os.PathLike, data: dict) -> dict:
    """dataset, rho, method (the objective), variant (the run's name: the method, or an ablation variant
    such as coral~tau_sc=0.5) and seed of the run a JSON artifact (`data`, read from `path`) belongs to,
    plus the file name."""
    record = {key: _lookup(data, ("run", key), path) for key in ["dataset", "rho", "method", "variant", "seed"]}
    record["rho"] = _number(record["rho"])  # NaN for a dataset long-tailed as published
    record["file"] = str(path)
    return record


def _method_rank(method: str) -> int:
    return methods.NAMES.index(method) if method in methods.NAMES else len(methods.NAMES)


def _sort(df: pd.DataFrame, extra: list[str] | None = None, extra_ascending: list[bool] | None = None) -> pd.DataFrame:
    """Order rows by dataset, rho (descending), method (coral.methods' order first), then `extra` columns."""
    df = df.assign(_rank=df["method"].map(_method_rank))
    by = ["dataset", "rho", "_rank", "method"] + (extra or [])
    ascending = [True, False, True, True] + (extra_ascending or [])
    return df.sort_values(by, ascending=ascending, kind="stable").drop(columns="_rank").reset_index(drop=True)


def _same_value(values: pd.Series) -> bool:
    """True if all values are equal, treating missing values (None/NaN) as equal to each other."""
    return values.isna().all() or (values.notna().all() and values.nunique() == 1)


def _aggregate(records: pd.DataFrame, keys: list[str], metrics: list[str], constants: list[str]) -> pd.DataFrame:
    """One row per `keys`: num_seeds, `<metric>_mean` / `<metric>_std` over seeds, and `constants`,
    which must be identical across the seeds of a row (ValueError naming the files otherwise)."""
    rows = []
    for key_values, group in records.groupby(keys, sort=False, dropna=False):
        where = dict(zip(keys, key_values))
        files = sorted(set(group["file"]))
        if group["seed"].duplicated().any():
            raise ValueError(f"{where}: seed listed more than once ({sorted(group['seed'])}) in {files}")
        row = dict(where, num_seeds=len(group))
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        for column in constants:
            if not _same_value(group[column]):
                raise ValueError(f"{where}: {column!r} differs across seeds "
                                 f"({group[column].tolist()}) in {files}; a row must use one setting")
            row[column] = group[column].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, out_csv: str | os.PathLike, stage: str, inputs: Sequence) -> None:
    """Write a table atomically with its lineage record."""
    _write_csv(df, out_csv)
    lineage.record([out_csv], stage, inputs, {}, identity.table(stage))


def _write_csv(df: pd.DataFrame, out_csv: str | os.PathLike) -> None:
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)


def metrics_record(path: str | os.PathLike) -> dict:
    """One run's row of metrics and sampling settings from its metrics JSON (checked against its lineage)."""
    data = lineage.read_json_artifact(path, "the metrics file", "evaluate")
    record = _run_record(path, data)
    record.update({name: _number(_lookup(data, keys, path)) for name, keys in MAIN_METRICS.items()})
    record.update({name: _lookup(data, keys, path) for name, keys in SAMPLING.items()})
    return record


def main_table(metrics_jsons: Sequence[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """The main results table from metrics JSONs (one per run and seed).

    Columns: dataset, rho, method, num_seeds, then `<m>_mean`, `<m>_std` for m in fid, isc, kid,
    precision, recall, prd_f8, prd_f1_8, tail_fid, tail_kid, tail_accuracy, head_fid, head_accuracy (isc and
    kid are the runs' isc_mean and kid_mean), then sampler, steps, eta, omega, num_samples,
    feature_extractor, which must agree across the seeds of a row (ValueError otherwise).
    Writes out_csv atomically and returns the table.
    """
    if not metrics_jsons:
        raise ValueError("main_table: no metrics JSON files given")
    records = pd.DataFrame([metrics_record(path) for path in metrics_jsons])
    table = _sort(_aggregate(records, SETTING, list(MAIN_METRICS), list(SAMPLING)))
    write_table(table, out_csv, "main_table", metrics_jsons)
    return table


def _per_class_records(json_path: str | os.PathLike, csv_path: str | os.PathLike) -> pd.DataFrame:
    run = metrics_record(json_path)
    with lineage.reading(csv_path, "the per-class metrics file", "evaluate"):
        frame = pd.read_csv(csv_path)
    missing = [c for c in PER_CLASS_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}; expected {PER_CLASS_COLUMNS}")
    if frame["class"].duplicated().any():
        raise ValueError(f"{csv_path}: a class appears more than once")
    frame = frame[PER_CLASS_COLUMNS].drop(columns="kid_std").rename(columns={"kid_mean": "kid"})
    return frame.assign(**{k: run[k] for k in SETTING + ["seed"] + list(SAMPLING)}, file=str(csv_path))


def per_class_table(metrics_of: Mapping[str | os.PathLike, str | os.PathLike],
                    out_csv: str | os.PathLike | None) -> pd.DataFrame:
    """Per-class metrics over seeds. metrics_of maps each per-class CSV to the metrics JSON of its run
    (the evaluate stage writes the two side by side).

    Columns: dataset, rho, method, class, class_name, train_count, group, omega, num_seeds, then
    `<m>_mean`, `<m>_std` over seeds for m in fid, kid, precision, recall, accuracy (kid is each
    run's per-class kid_mean). Rows: setting and method as in the main table, then classes head to
    tail (train_count descending, ties by class id). Class info and sampling settings must agree
    across seeds. Writes out_csv atomically (unless None) and returns the table.
    """
    if not isinstance(metrics_of, Mapping):
        raise TypeError(f"per_class_table: expected a mapping of per-class CSV -> metrics JSON, "
                        f"got {type(metrics_of).__name__}")
    if not metrics_of:
        raise ValueError("per_class_table: no files given")
    records = pd.concat([_per_class_records(j, c) for c, j in metrics_of.items()], ignore_index=True)
    table = _aggregate(records, SETTING + ["class"], PER_CLASS_METRICS, CLASS_INFO + list(SAMPLING))
    table = table.drop(columns=[c for c in SAMPLING if c != "omega"])  # every row records its guidance
    table = table[SETTING + ["class"] + CLASS_INFO + ["omega"] + [c for c in table.columns
                                                                  if c not in SETTING + ["class", "omega"] + CLASS_INFO]]
    table = _sort(table, ["train_count", "class"], [False, True])
    if out_csv is not None:
        write_table(table, out_csv, "per_class_table", [*metrics_of.values(), *metrics_of])
    return table


def latent_record(path: str | os.PathLike) -> dict:
    """One run's bottleneck separation scores from its separation JSON (checked against its lineage)."""
    data = lineage.read_json_artifact(path, "the latent scores file", "latent")
    record = _run_record(path, data)
    record.update({key: _number(_lookup(data, (key,), path)) for key in LATENT_SCORES})
    record.update({key: _lookup(data, (key,), path) for key in LATENT_SETTINGS})
    return record


def latent_table(separation_jsons: Sequence[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Separation scores over seeds from the latent stage's separation JSONs.

    Columns: dataset, rho, method, num_seeds, `<s>_mean`, `<s>_std` for s in silhouette,
    silhouette_{head,medium,tail}, knn_purity, knn_purity_{head,medium,tail} of the clean images'
    features and the same prefixed noised_ of the noised images', then t, knn_k, num_points
    (identical across seeds). Writes out_csv atomically and returns the table.
    """
    if not separation_jsons:
        raise ValueError("latent_table: no separation JSON files given")
    records = pd.DataFrame([latent_record(path) for path in separation_jsons])
    table = _sort(_aggregate(records, SETTING, LATENT_SCORES, LATENT_SETTINGS))
    write_table(table, out_csv, "latent_table", separation_jsons)
    return table


def ablation_table(study: str, key: str | None, points: Mapping[str | os.PathLike, object],
                   out_csv: str | os.PathLike) -> pd.DataFrame:
    """One ablation study over seeds. `points` maps each metrics JSON to the value of `key` it was made
    with (for a study without key, the value is the method).

    Columns: study, key, dataset, rho, method, value, run (the run variant), num_seeds, then
    `<m>_mean`, `<m>_std` for the main-table metrics, then the sampling columns. Rows keep the
    order of `points` (methods, then values as configured). Writes out_csv atomically.
    """
    if not points:
        raise ValueError(f"ablation_table {study}: no metrics JSON files given")
    records = []
    for path, value in points.items():
        record = metrics_record(path)
        records.append({**record, "run": record["variant"], "value": str(value)})
    records = pd.DataFrame(records)
    table = _aggregate(records, ["method", "value"], list(MAIN_METRICS), ["dataset", "rho", "run", *SAMPLING])
    table.insert(0, "study", study)
    table.insert(1, "key", key or "method")
    front = ["study", "key", "dataset", "rho", "method", "value", "run", "num_seeds"]
    table = table[front + [c for c in table.columns if c not in front]]
    write_table(table, out_csv, "ablation_table", list(points))
    return table


# Published metric name -> main-table column.
PUBLISHED_METRICS = {"FID": "fid", "IS": "isc", "Recall": "recall"}


def omega_tuned_table(metrics_jsons: Sequence[str | os.PathLike], fixed_omega: Mapping[str, float],
                      out_csv: str | os.PathLike | None) -> pd.DataFrame:
    """Each method at a tuned omega beside its fixed one (sample.omega), from the sample sets of the
    omega study and the main runs.

    tuned: the omega with the lowest mean FID over seeds against the reference set's selection half;
    both rows are then scored by FID against the other half (coral.fidelity.reference_halves), which the
    choice never saw. Columns: dataset, rho, method, num_seeds, omega_fixed, omega_tuned, omegas (the
    candidates), report_fid_fixed_mean/_std, report_fid_tuned_mean/_std, gain (fixed - tuned, mean),
    selection (the rule, in words). Writes out_csv atomically (unless None).
    """
    records = []
    for path in metrics_jsons:
        data = lineage.read_json_artifact(path, "the metrics file", "evaluate")
        if "reference_halves" not in data:
            raise ValueError(f"{path}: no reference_halves (written by an older evaluation); evaluate it again")
        records.append({**_run_record(path, data), "omega": float(_lookup(data, SAMPLING["omega"], path)),
                        **{key: _number(data["reference_halves"][key]) for key in ("selection_fid", "report_fid")}})
    records = pd.DataFrame(records).drop_duplicates(["dataset", "rho", "method", "omega", "seed"])
    rows = []
    for (dataset, rho, method), runs in records.groupby(["dataset", "rho", "method"], sort=False, dropna=False):
        by_omega = runs.groupby("omega")
        tuned = by_omega["selection_fid"].mean().idxmin()
        fixed = float(fixed_omega[method])
        if fixed not in by_omega.groups:
            raise ValueError(f"{method}: no sample set at its fixed omega {fixed} among {sorted(by_omega.groups)}")
        report = {name: by_omega.get_group(w).set_index("seed")["report_fid"] for name, w in (("fixed", fixed),
                                                                                             ("tuned", tuned))}
        seeds = report["fixed"].index.intersection(report["tuned"].index)
        row = {"dataset": dataset, "rho": rho, "method": method, "num_seeds": len(seeds), "omega_fixed": fixed,
               "omega_tuned": float(tuned), "omegas": ", ".join(f"{w:g}" for w in sorted(by_omega.groups))}
        for name, values in report.items():
            values = values.loc[seeds].to_numpy(dtype=float)
            row[f"report_fid_{name}_mean"] = values.mean()
            row[f"report_fid_{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        row["gain"] = row["report_fid_fixed_mean"] - row["report_fid_tuned_mean"]
        row["selection"] = ("omega: the lowest mean FID against the reference's selection half; FID: against "
                            "its report half")
        rows.append(row)
    table = _sort(pd.DataFrame(rows))
    if out_csv is not None:
        write_table(table, out_csv, "omega_tuned_table", list(metrics_jsons))
    return table


def paper_vs_ours(main_csv: str | os.PathLike, published_csv: str | os.PathLike, out_csv: str | os.PathLike,
                  out_md: str | os.PathLike) -> pd.DataFrame:
    """The published numbers beside ours for every (setting, metric, method) cell both have.

    published_csv: columns setting, metric (FID, IS, Recall), method, value, source. Ours is the
    mean (and std) over seeds from the main table; difference = ours - published. `comparable` is
    true only for Inception features (a classifier-feature FID is on another scale). Writes the
    CSV and a markdown rendering atomically; with no shared cell both say so and hold no rows.
    """
    published = pd.read_csv(published_csv)
    missing = [c for c in ["setting", "metric", "method", "value", "source"] if c not in published.columns]
    if missing:
        raise ValueError(f"{published_csv}: missing columns {missing}")
    unknown = sorted(set(published["metric"]) - set(PUBLISHED_METRICS))
    if unknown:
        raise ValueError(f"{published_csv}: metrics {unknown} unknown; allowed: {sorted(PUBLISHED_METRICS)}")
    main = pd.read_csv(main_csv)
    rows = []
    for _, ours in main.iterrows():
        setting = setting_name(ours["dataset"], None if pd.isna(ours["rho"]) else ours["rho"])
        cells = published[(published["setting"] == setting) & (published["method"] == ours["method"])]
        for _, cell in cells.iterrows():
            column = PUBLISHED_METRICS[cell["metric"]]
            mean = float(ours[f"{column}_mean"])
            rows.append({"setting": setting, "metric": cell["metric"], "method": ours["method"],
                         "published": float(cell["value"]), "ours": mean, "ours_std": float(ours[f"{column}_std"]),
                         "num_seeds": int(ours["num_seeds"]), "omega": ours["omega"],
                         "difference": mean - float(cell["value"]),
                         "comparable": ours["feature_extractor"] == "inception-v3-compat",
                         "feature_extractor": ours["feature_extractor"], "num_samples": int(ours["num_samples"]),
                         "source": cell["source"]})
    columns = ["setting", "metric", "method", "published", "ours", "ours_std", "num_seeds", "omega", "difference",
               "comparable", "feature_extractor", "num_samples", "source"]
    table = pd.DataFrame(rows, columns=columns)
    write_table(table, out_csv, "paper_vs_ours", [main_csv, published_csv])
    if table.empty:
        text = ("# Published vs ours\n\nNo setting of this run has published numbers "
                f"(published settings: {', '.join(sorted(set(published['setting'])))}).\n")
    else:
        text = ("# Published vs ours\n\nOurs: mean over seeds; difference = ours - published. Rows with "
                "comparable = False use another feature extractor than the paper's Inception.\n\n"
                + markdown(table.drop(columns=["source"])) + f"\nSource: {table['source'].iloc[0]}\n")
    with atomic_path(out_md) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    lineage.record([out_md], "paper_vs_ours", [main_csv, published_csv], {}, identity.table("paper_vs_ours"))
    return table


def markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table; floats to `digits` significant digits, missing values empty."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 12px; color: #1e293b; }
h1 { font-size: 16px; margin: 0 0 4px; }
p { margin: 0 0 8px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 2px 8px; border-bottom: 1px solid #e2e8f0; white-space: nowrap; text-align: left; }
thead th { position: sticky; top: 0; background: #f1f5f9; }
tbody tr:hover { background: #f8fafc; }
"""


def html_page(csv_path: str | os.PathLike, out_html: str | os.PathLike, title: str, rule: str,
              digits: int = 4) -> pd.DataFrame:
    """A table as a standalone HTML page: its view in the Snakemake report, which shows HTML but offers a
    .csv only as a download. Floats to `digits` significant digits (as `markdown`), missing values empty,
    numbers right-aligned, the header row kept in view, and the CSV itself embedded as a download link.
    The CSV is checked against its lineage record first (`rule` makes it); the page is written
    atomically, with a lineage record."""
    with lineage.reading(csv_path, "the table", rule):
        raw = Path(csv_path).read_bytes()
        df = pd.read_csv(csv_path)
    name = Path(csv_path).name
    numeric = [i + 1 for i, column in enumerate(df.columns)
               if pd.api.types.is_numeric_dtype(df[column]) and not pd.api.types.is_bool_dtype(df[column])]
    align = ", ".join(f"td:nth-child({i})" for i in numeric)
    style = PAGE_STYLE + (f"{align} {{ text-align: right; }}\n" if numeric else "")
    table = df.to_html(index=False, na_rep="", border=0, float_format=lambda v: f"{v:.{digits}g}")
    count = f"{len(df)} row{'' if len(df) == 1 else 's'}" if len(df) else "This table has no rows"
    csv_uri = "data:text/csv;base64," + base64.b64encode(raw).decode("ascii")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{style}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p>{count} &middot; {html.escape(str(csv_path))} &middot; '
            f'<a download="{html.escape(name)}" href="{csv_uri}">download {html.escape(name)}</a></p>\n'
            f"{table}\n</body>\n</html>\n")
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    lineage.record([out_html], "table_page", [csv_path], {}, identity.table("table_page"))
    return df
