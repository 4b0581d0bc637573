"""The paper's claims (coral/published/claims.yaml) tested across training seeds, each with a verdict.

Every effect is paired over seeds: for seed s it compares runs that share the seed (and so the
per-image sampling noise), oriented so that an effect > 0 supports the claim. Its interval is
Student's t at 95% over the seeds' effects. The verdict rule (docs/method.md §7):

    holds         the interval lies above -margin (margin 0 unless the claim is "no worse than");
    contradicted  the interval lies below -margin;
    inconclusive  the interval contains -margin, there is one seed (no interval), or the effect or its
                  interval is not finite (an infinite metric value; the reason says so).

A row whose runs were not made is "not covered". A claim holds when every one of its rows is covered
and holds, is contradicted when any covered row is contradicted, is not covered when none of its rows
is, and is otherwise inconclusive; its reason names the rows not covered.
"""
from __future__ import annotations

import importlib.resources
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from coral import lineage, tables
from coral.grid import setting_name
from coral.io import atomic_path

LEVEL = 0.95
HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_COVERED = "holds", "contradicted", "inconclusive", "not covered"
KINDS = ("compare", "gain_gap", "best_in_range", "same_best")
REFERENCE_HALVES = ("selection_fid", "report_fid")  # FID against the reference set's two halves (coral.fidelity.reference_halves)
CLAIM_RULE = ("A claim holds when every one of its rows is covered and holds, is contradicted when any covered "
              "row is contradicted, is not covered when none of its rows is, and is otherwise inconclusive; its "
              "reason names the rows not covered.")
ROW_COLUMNS = ["claim", "setting", "comparison", "metric", "omega", "effect", "low", "high", "num_seeds", "verdict",
               "reason"]


def registry() -> list[dict]:
    """The claims, in the paper's order."""
    text = (importlib.resources.files("coral") / "published" / "claims.yaml").read_text()
    return yaml.safe_load(text)


@dataclass(frozen=True)
class Effect:
    """Mean of the per-seed effects and its two-sided t interval (NaN with fewer than two seeds)."""
    mean: float
    low: float
    high: float
    num_seeds: int


def paired_effect(effects: Sequence[float], level: float = LEVEL) -> Effect:
    """mean +- t_{(1+level)/2, n-1} * sd / sqrt(n) of per-seed effects."""
    values = np.asarray(effects, dtype=float)
    n = len(values)
    if n == 0:
        return Effect(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2 or not math.isfinite(mean):  # an infinite value: no spread either
        return Effect(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return Effect(mean, mean - half, mean + half, n)


def verdict(effect: Effect, margin: float = 0.0) -> tuple[str, str]:
    """(verdict, reason) of an effect under the rule of the module docstring."""
    if effect.num_seeds == 0:
        return NOT_COVERED, "no seed has both runs"
    if not math.isfinite(effect.mean):
        return INCONCLUSIVE, f"a value is not finite: the effect is {effect.mean:g}"
    if effect.num_seeds < 2:
        return INCONCLUSIVE, "1 seed: no interval"
    if not (math.isfinite(effect.low) and math.isfinite(effect.high)):
        return INCONCLUSIVE, f"a value is not finite: the interval is [{effect.low:g}, {effect.high:g}]"
    bound = f"-{margin:.4g}" if margin else "0"
    if effect.low > -margin:
        return HOLDS, f"the {LEVEL:.0%} interval lies above {bound}"
    if effect.high < -margin:
        return CONTRADICTED, f"the {LEVEL:.0%} interval lies below {bound}"
    return INCONCLUSIVE, f"the {LEVEL:.0%} interval contains {bound}"


def _per_seed(frame: pd.DataFrame, column: str, arm, metric: str) -> pd.Series:
    """metric by seed of one arm: the runs whose `column` (method or value) is `arm`."""
    rows = frame[frame[column].astype(str) == str(arm)]
    return rows.set_index("seed")[metric].astype(float)


def _paired(sides: Mapping[str, pd.Series]) -> pd.DataFrame:
    """A column per side, on the seeds where every side has a value (a run not made or a null metric has
    none; an infinite value is kept)."""
    return pd.DataFrame(dict(sides)).dropna()


def _omegas(frame: pd.DataFrame, column: str | None = None, arms: Sequence = ()) -> str:
    """The guidance scales of the runs compared: one value where all share it, else each arm's (with
    `arms`) or every value (a sweep)."""
    if "omega" not in frame.columns:
        return ""
    def values(rows) -> str:
        return ", ".join(f"{w:g}" for w in sorted(set(rows["omega"].dropna().astype(float))))
    if not arms:
        return values(frame)
    of_arm = {arm: frame[frame[column].astype(str) == str(arm)] for arm in arms}
    compared = pd.concat(of_arm.values())
    if compared["omega"].nunique() <= 1:
        return values(compared)
    return "; ".join(f"{arm}: {values(rows)}" for arm, rows in of_arm.items())


def _row(claim: dict, setting: str, comparison: str, metric: str, effects: pd.Series,
         margin: float = 0.0, omega: str = "") -> dict:
    """effects: one per paired seed (see _paired), so a NaN among them is arithmetic on infinite values."""
    effect = paired_effect(effects.to_numpy())
    decision, reason = verdict(effect, margin)
    return {"claim": claim["id"], "setting": setting, "comparison": comparison, "metric": metric, "omega": omega,
            "effect": effect.mean, "low": effect.low, "high": effect.high, "num_seeds": effect.num_seeds,
            "verdict": decision, "reason": reason}


def _not_covered(claim: dict, setting: str, comparison: str, metric: str, reason: str, omega: str = "") -> dict:
    """A row without an effect: not covered, for `reason`."""
    return {**_row(claim, setting, comparison, metric, pd.Series(dtype=float), omega=omega), "reason": reason}


def _best(values: pd.Series, better: str):
    return values.idxmin() if better == "lower" else values.idxmax()


def _best_per_seed(table: pd.DataFrame, better: str) -> pd.Series:
    """The best value of each row (seed) of a seed x value table, skipping missing ones."""
    return table.min(axis=1) if better == "lower" else table.max(axis=1)


def claim_rows(claim: dict, records: pd.DataFrame) -> list[dict]:
    """The rows of one claim: an effect, interval and verdict per setting, metric and comparison.

    records: one row per run and seed with columns runs ('main' or a study name), setting, method,
    value (the study's value; None for main runs), seed and the metric columns the claims name.
    """
    if claim["kind"] not in KINDS:
        raise ValueError(f"claim {claim['id']}: kind {claim['kind']!r}; allowed: {', '.join(KINDS)}")
    runs = records[records["runs"] == claim["runs"]] if len(records) else records
    if "method" in claim and len(runs):
        runs = runs[runs["method"] == claim["method"]]
    if runs.empty:
        return [_not_covered(claim, "", "", ", ".join(claim["metrics"]),
                             f"no runs of {claim['runs']!r} (not in this preset's studies)")]
    sign = -1.0 if claim["better"] == "lower" else 1.0  # effect = sign * (ours - theirs) > 0 supports
    rows = []
    for setting, frame in runs.groupby("setting", sort=False):
        for metric in claim["metrics"]:
            needed = [metric] + ([claim["minus_metric"]] if claim["kind"] == "gain_gap" else [])
            absent = [m for m in needed if m not in frame.columns or frame[m].isna().all()]
            if absent:
                rows.append(_not_covered(claim, setting, "", metric, f"no {', '.join(absent)} for these runs"))
                continue
            if claim["kind"] in ("compare", "gain_gap"):
                rows += [_compare_row(claim, setting, frame, metric, against, sign) for against in claim["against"]]
            elif claim["kind"] == "best_in_range":  # a row per method: never one method's best against another's
                rows += [_best_in_range_row(claim, setting, of_method, metric, sign)
                         for _, of_method in frame.groupby("method", sort=False)]
            else:
                rows.append(_same_best_row(claim, setting, frame, metric, sign))
    return rows


def _compare_row(claim: dict, setting: str, frame: pd.DataFrame, metric: str, against: str, sign: float) -> dict:
    """Ours against one of `against` on `metric` (gain_gap: the gain on `metric` minus the gain on
    `minus_metric`), per seed that has both runs."""
    column = claim.get("arms", "method")
    sides = {"ours": _per_seed(frame, column, claim["ours"], metric),
             "theirs": _per_seed(frame, column, against, metric)}
    label = f"{claim['ours']} vs {against}"
    if claim["kind"] == "gain_gap":
        minus = claim["minus_metric"]
        sides.update(ours_minus=_per_seed(frame, column, claim["ours"], minus),
                     theirs_minus=_per_seed(frame, column, against, minus))
        label += f" ({metric} gain minus {minus} gain)"
    seeds = _paired(sides)
    effects = sign * (seeds["ours"] - seeds["theirs"])
    if claim["kind"] == "gain_gap":
        effects = effects - sign * (seeds["ours_minus"] - seeds["theirs_minus"])
    # no worse than: by a fraction of the baseline's mean over the paired seeds
    margin = claim["margin"] * abs(seeds["theirs"].mean()) if "margin" in claim else 0.0
    return _row(claim, setting, label, metric, effects, margin, _omegas(frame, column, [claim["ours"], against]))


def _best_in_range_row(claim: dict, setting: str, frame: pd.DataFrame, metric: str, sign: float) -> dict:
    """Per seed: the best `metric` over the values inside the range against the best outside it, of the
    runs of one method (`frame`)."""
    low, high = claim["range"]
    table = frame.pivot_table(index="seed", columns="value", values=metric, aggfunc="first")
    values = [float(v) for v in table.columns]
    inside = [c for c, v in zip(table.columns, values) if low <= v <= high]
    outside = [c for c in table.columns if c not in inside]
    label = f"{frame['method'].iloc[0]} best in [{low}, {high}] vs best outside"
    if not inside or not outside:
        where = "inside" if not inside else "outside"
        return _not_covered(claim, setting, label, metric, f"the study has no value {where} [{low}, {high}]: {values}")
    seeds = _paired({"inside": _best_per_seed(table[inside], claim["better"]),
                     "outside": _best_per_seed(table[outside], claim["better"])})
    effects = sign * (seeds["inside"] - seeds["outside"])
    return _row(claim, setting, label, metric, effects, omega=_omegas(frame))


def _by_value(frame: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """A seed x value table of one method's `metric`."""
    return frame[frame["method"] == method].pivot_table(index="seed", columns="value", values=metric, aggfunc="first")


def _same_best_row(claim: dict, setting: str, frame: pd.DataFrame, metric: str, sign: float) -> dict:
    """Ours at its own best value (by the mean over seeds) against ours at the best value of `against`.

    For FID each best is chosen on the reference set's selection half and the effect is taken on its
    report half, which the choice never saw (as tables.omega_tuned_table). The halves hold FID only: any
    other metric chooses and tests on the same values."""
    ours, against = claim["ours"], claim["against"][0]
    label, omega = f"{ours} best vs {against} best", _omegas(frame)
    missing = [arm for arm in (ours, against) if frame.loc[frame["method"] == arm, metric].isna().all()]
    if missing:
        return _not_covered(claim, setting, label, metric,
                            f"the study has no {' or '.join(missing)} runs with {metric}", omega)
    select = test = metric
    if metric == "fid":
        compared = frame[frame["method"].isin([ours, against])]
        if any(half not in compared or compared[half].isna().any() for half in REFERENCE_HALVES):
            return _not_covered(claim, setting, label, metric, "a metrics file has no reference_halves (an older "
                                "evaluation): evaluate it again to choose on one half and test on the other", omega)
        select, test = REFERENCE_HALVES
    ours_best = _best(_by_value(frame, ours, select).mean(), claim["better"])
    their_best = _best(_by_value(frame, against, select).mean(), claim["better"])
    label = f"{ours} best {ours_best} vs {against} best {their_best}"
    if metric == "fid":
        label += " (chosen on the reference's selection half, FID on its report half)"
    tested = _by_value(frame, ours, test)
    if their_best not in tested:
        return _not_covered(claim, setting, label, metric, f"{ours} has no run at {their_best}", omega)
    seeds = _paired({"at_theirs": tested[their_best], "at_own": tested[ours_best]})
    effects = sign * (seeds["at_theirs"] - seeds["at_own"])
    row = _row(claim, setting, label, metric, effects, omega=omega)
    if ours_best == their_best and row["num_seeds"] >= 2 and math.isfinite(row["effect"]):  # the same runs: 0
        row.update(verdict=HOLDS, reason=f"both are best at {ours_best}")
    return row


def _describe(row: dict) -> str:
    """A row as a claim's reason names it: setting / comparison / metric: its reason."""
    where = " / ".join(str(row[key]) for key in ("setting", "comparison", "metric") if row.get(key))
    return f"{where}: {row['reason']}" if row.get("reason") else where


def claim_decision(rows: Sequence[dict]) -> tuple[str, str]:
    """(verdict, reason) of a claim from its rows under CLAIM_RULE; the reason counts the rows by verdict
    and names those not covered."""
    verdicts = [row["verdict"] for row in rows]
    uncovered = [_describe(row) for row in rows if row["verdict"] == NOT_COVERED]
    counts = [f"{verdicts.count(v)} {v}" for v in (HOLDS, CONTRADICTED, INCONCLUSIVE) if v in verdicts]
    if uncovered:
        counts.append(f"{len(uncovered)} not covered ({'; '.join(uncovered)})")
    reason = "rows: " + ", ".join(counts)
    if len(uncovered) == len(rows):
        return NOT_COVERED, reason
    if CONTRADICTED in verdicts:
        return CONTRADICTED, reason
    if verdicts.count(HOLDS) == len(rows):  # every row covered and holds
        return HOLDS, reason
    return INCONCLUSIVE, reason


def claim_verdict(rows: Sequence[dict]) -> str:
    """The verdict of a claim from its rows (CLAIM_RULE)."""
    return claim_decision(rows)[0]


def judge(records: pd.DataFrame, claims: Sequence[dict] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, summary): every claim's rows, and one line per claim with its wording, source, verdict,
    the verdict's reason and the smallest number of seeds behind it."""
    claims = registry() if claims is None else claims
    rows, summary = [], []
    for claim in claims:
        found = claim_rows(claim, records)
        rows += found
        seeds = [row["num_seeds"] for row in found if row["verdict"] != NOT_COVERED]
        decision, reason = claim_decision(found)
        summary.append({"claim": claim["id"], "statement": claim["claim"], "source": claim["source"],
                        "verdict": decision, "reason": reason, "rows": len(found), "min_seeds": min(seeds, default=0)})
    return pd.DataFrame(rows, columns=ROW_COLUMNS), pd.DataFrame(summary)


def needs_latent(claims: Sequence[dict] | None = None) -> set[str]:
    """The runs ('main' or a study) whose claims read bottleneck separation scores."""
    return {claim["runs"] for claim in (registry() if claims is None else claims)
            if set(claim["metrics"]) & set(tables.LATENT_SCORES)}


def _reference_halves(metrics_json) -> dict:
    """selection_fid and report_fid of a metrics JSON; NaN where it predates reference_halves."""
    halves = lineage.read_json_artifact(metrics_json, "the metrics file", "evaluate").get("reference_halves", {})
    return {key: math.nan if halves.get(key) is None else float(halves[key]) for key in REFERENCE_HALVES}


def _record(runs: str, metrics_json, separation_json, value) -> dict:
    record = {**tables.metrics_record(metrics_json), **_reference_halves(metrics_json)}
    rho = None if math.isnan(record["rho"]) else record["rho"]
    record.update(runs=runs, setting=setting_name(record["dataset"], rho), value=value)
    if separation_json is not None:
        scores = tables.latent_record(separation_json)
        record.update({key: scores[key] for key in tables.LATENT_SCORES})
    return record


def read_records(main: Mapping[str | os.PathLike, str | os.PathLike | None],
                 studies: Mapping[str, Mapping[str | os.PathLike, dict]]) -> pd.DataFrame:
    """The records claim_rows reads. main: each main run's metrics JSON -> its separation JSON (or None);
    studies: study -> each point's metrics JSON -> {"value", "separation" (a JSON or None)}. Every
    file is checked against its lineage record."""
    rows = [_record("main", metrics, separation, None) for metrics, separation in main.items()]
    rows += [_record(study, metrics, point.get("separation"), point["value"])
             for study, points in studies.items() for metrics, point in points.items()]
    return pd.DataFrame(rows)


VERDICT_RULE = (f"Each effect is paired over training seeds (the same seed and sampling noise on both sides) and "
                f"oriented so that > 0 supports the claim; its interval is Student's t at {LEVEL:.0%}. A row holds "
                "when the interval lies above 0 (above -margin for a no-worse claim), is contradicted when it "
                "lies below, is inconclusive when it contains it, there is one seed, or a value is not finite "
                "(an infinite metric), and is not covered when its runs were not made. " + CLAIM_RULE)


def write_claims(records: pd.DataFrame, out_csv: str | os.PathLike, out_md: str | os.PathLike,
                 inputs: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """claims.csv (a row per claim, setting, comparison and metric, with the claim's verdict and its
    reason beside each row's) and claims.md (the verdicts, the rule, then every row), each atomically
    with a lineage record naming `inputs`."""
    rows, summary = judge(records)
    by_claim = summary.set_index("claim")
    rows.insert(1, "claim_verdict", rows["claim"].map(by_claim["verdict"]))
    rows.insert(2, "claim_reason", rows["claim"].map(by_claim["reason"]))
    tables.write_table(rows, out_csv, "claims", list(inputs))
    shown = summary.drop(columns="rows").rename(columns={"min_seeds": "seeds"})
    text = ("# Does the paper hold?\n\n" + tables.markdown(shown) + "\n" + VERDICT_RULE + "\n\n## Every comparison\n\n"
            + tables.markdown(rows.drop(columns=["claim_verdict", "claim_reason"]), digits=3))
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    return rows, summary
