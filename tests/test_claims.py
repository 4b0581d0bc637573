"""Claims: the paired t interval against a t table and scipy's one-sample test, the verdict rule on
hand-made cases, and each kind of claim on hand-made records."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from coral import claims
from coral.claims import CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_COVERED, Effect, paired_effect, verdict


def test_interval_of_three_seeds_matches_the_t_table():
    # mean 2, sd 1, t_{0.975, 2} = 4.303 (printed t tables): 2 +- 4.303 / sqrt(3)
    effect = paired_effect([1.0, 2.0, 3.0])
    assert effect.mean == 2.0 and effect.num_seeds == 3
    assert effect.low == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
    assert effect.high == pytest.approx(2 + 4.303 / math.sqrt(3), abs=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_interval_matches_scipys_one_sample_t_test(seed):
    values = np.random.default_rng(seed).normal(0.3, 1.0, size=2 + seed)
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    effect = paired_effect(values)
    assert (effect.low, effect.high) == pytest.approx((low, high), rel=1e-9)


def test_interval_agrees_with_a_bootstrap_for_many_seeds():
    values = np.random.default_rng(0).normal(1.0, 2.0, size=400)
    means = np.random.default_rng(1).choice(values, size=(20000, len(values))).mean(axis=1)
    effect = paired_effect(values)
    assert effect.low == pytest.approx(np.quantile(means, 0.025), abs=0.02)
    assert effect.high == pytest.approx(np.quantile(means, 0.975), abs=0.02)


@pytest.mark.parametrize("values,margin,expected", [
    ([2.0], 0.0, INCONCLUSIVE),                 # one seed: no interval
    ([1.0, 2.0, 3.0], 0.0, INCONCLUSIVE),       # [-0.48, 4.48] contains 0
    ([2.0, 2.1, 1.9], 0.0, HOLDS),
    ([-2.0, -2.1, -1.9], 0.0, CONTRADICTED),
    ([-0.1, -0.12, -0.08], 0.5, HOLDS),         # worse, but by less than the margin
    ([-0.1, -0.12, -0.08], 0.05, CONTRADICTED),  # worse by more than the margin
    ([], 0.0, NOT_COVERED),
])
def test_verdict_rule(values, margin, expected):
    assert verdict(paired_effect(values), margin)[0] == expected


def test_one_seed_says_why_it_is_inconclusive():
    assert verdict(Effect(1.0, math.nan, math.nan, 1)) == (INCONCLUSIVE, "1 seed: no interval")


def records(rows):
    return pd.DataFrame(rows, columns=["runs", "setting", "method", "value", "seed", "fid", "tail_fid", "head_fid"])


def test_compare_pairs_seeds_and_orients_the_effect():
    claim = {"id": "X", "kind": "compare", "runs": "main", "ours": "coral", "against": ["ddpm"],
             "metrics": ["fid"], "better": "lower"}
    frame = records([("main", "s", "coral", None, seed, fid, 0, 0) for seed, fid in [(0, 5.0), (1, 6.0), (2, 5.5)]]
                    + [("main", "s", "ddpm", None, seed, fid, 0, 0) for seed, fid in [(0, 7.0), (1, 7.5), (3, 9.0)]])
    (row,) = claims.claim_rows(claim, frame)
    # seeds 0 and 1 have both runs: effects 7 - 5 = 2 and 7.5 - 6 = 1.5
    assert row["num_seeds"] == 2 and row["effect"] == pytest.approx(1.75)
    expected = paired_effect([2.0, 1.5])
    assert (row["low"], row["high"]) == pytest.approx((expected.low, expected.high))
    assert row["comparison"] == "coral vs ddpm"


def test_gain_gap_is_the_tail_gain_minus_the_head_gain():
    claim = {"id": "C3", "kind": "gain_gap", "runs": "main", "ours": "coral", "against": ["ddpm"],
             "metrics": ["tail_fid"], "minus_metric": "head_fid", "better": "lower"}
    frame = records([("main", "s", "coral", None, 0, 0, 40.0, 10.0), ("main", "s", "ddpm", None, 0, 0, 50.0, 11.0),
                     ("main", "s", "coral", None, 1, 0, 42.0, 12.0), ("main", "s", "ddpm", None, 1, 0, 47.0, 12.5)])
    (row,) = claims.claim_rows(claim, frame)
    assert row["effect"] == pytest.approx(((50 - 40) - (11 - 10) + (47 - 42) - (12.5 - 12)) / 2)


def test_best_in_range_compares_the_best_inside_with_the_best_outside():
    claim = {"id": "C7", "kind": "best_in_range", "runs": "tau_r", "range": [0.5, 1.0], "metrics": ["fid"],
             "better": "lower"}
    fids = {0.3: [6.0, 6.5], 0.5: [5.0, 5.8], 1.0: [5.5, 5.2], 2.0: [7.0, 4.9]}
    frame = records([("tau_r", "s", "coral", v, seed, fid, 0, 0) for v, f in fids.items() for seed, fid in enumerate(f)])
    (row,) = claims.claim_rows(claim, frame)
    # seed 0: min outside 6.0, inside 5.0 -> 1.0; seed 1: outside 4.9, inside 5.2 -> -0.3
    assert row["effect"] == pytest.approx((1.0 - 0.3) / 2) and row["verdict"] == INCONCLUSIVE
    only_inside = frame[frame["value"].between(0.5, 1.0)]
    assert claims.claim_rows(claim, only_inside)[0]["verdict"] == NOT_COVERED


def with_halves(frame):
    """Both reference halves' FID equal to the whole reference's: selection and test see the same values."""
    return frame.assign(selection_fid=frame["fid"], report_fid=frame["fid"])


def test_same_best_holds_when_both_bests_coincide_and_measures_the_cost_otherwise():
    claim = {"id": "C9", "kind": "same_best", "runs": "omega", "ours": "coral", "against": ["ddpm"],
             "metrics": ["fid"], "better": "lower"}
    rows = [("omega", "s", "coral", w, seed, fid, 0, 0) for w, f in {0.0: [9, 9.5], 1.0: [6, 6.2]}.items()
            for seed, fid in enumerate(f)]
    same = rows + [("omega", "s", "ddpm", w, seed, fid, 0, 0) for w, f in {0.0: [9, 9.5], 1.0: [7, 7.1]}.items()
                   for seed, fid in enumerate(f)]
    assert claims.claim_rows(claim, with_halves(records(same)))[0]["verdict"] == HOLDS
    other = rows + [("omega", "s", "ddpm", w, seed, fid, 0, 0) for w, f in {0.0: [7, 7.2], 1.0: [8, 8.1]}.items()
                    for seed, fid in enumerate(f)]
    (row,) = claims.claim_rows(claim, with_halves(records(other)))
    # coral at ddpm's best (0.0) against at its own best (1.0): -(9 - 6) and -(9.5 - 6.2)
    assert row["effect"] == pytest.approx(-(3 + 3.3) / 2) and row["verdict"] == CONTRADICTED


def test_a_claim_holds_only_where_every_row_holds():
    assert claims.claim_verdict([{"verdict": HOLDS}, {"verdict": HOLDS}]) == HOLDS
    assert claims.claim_verdict([{"verdict": HOLDS}, {"verdict": INCONCLUSIVE}]) == INCONCLUSIVE
    assert claims.claim_verdict([{"verdict": HOLDS}, {"verdict": CONTRADICTED}]) == CONTRADICTED
    assert claims.claim_verdict([{"verdict": NOT_COVERED}]) == NOT_COVERED


def test_the_registry_holds_the_papers_claims():
    registry = claims.registry()
    ids = [claim["id"] for claim in registry]
    assert len(set(ids)) == len(ids) and {f"C{i}" for i in range(1, 10)} <= set(ids)
    for claim in registry:
        assert claim["kind"] in claims.KINDS and claim["better"] in ("lower", "higher")
        assert claim["claim"] and claim["source"] and claim["metrics"]
    rows, summary = claims.judge(records([]))
    assert (summary["verdict"] == NOT_COVERED).all() and len(summary) == len(registry)


def test_arms_may_be_the_values_of_a_study_for_one_method():
    claim = {"id": "C5", "kind": "compare", "runs": "diagnosis", "arms": "value", "method": "ddpm",
             "ours": "balanced_scarce", "against": ["long_tailed"], "metrics": ["fid"], "better": "higher"}
    rows = [("diagnosis", "s", method, value, seed, fid + (1.0 if method == "coral" else 0.0), 0, 0)
            for method in ("ddpm", "coral") for seed in range(3)
            for value, fid in (("long_tailed", 0.2 + seed / 100), ("balanced_scarce", 0.5 + seed / 50))]
    (row,) = claims.claim_rows(claim, records(rows))
    # DDPM's runs only: 0.5 + s/50 - (0.2 + s/100) for s = 0, 1, 2
    assert row["effect"] == pytest.approx(np.mean([0.3 + s / 100 for s in range(3)]))
    assert row["comparison"] == "balanced_scarce vs long_tailed" and row["verdict"] == HOLDS


def _metrics(tmp_path, variant, seed, fid, head_fid, tail_fid, rho=0.01, halves=None):
    """A metrics JSON as the evaluate stage writes it (the fields the claims read); `halves`: the FIDs
    against the reference's selection and report halves (absent, as from an older evaluation, if None)."""
    overall = {"fid": fid, "isc_mean": 10 - fid, "isc_std": 0.1, "kid_mean": fid / 100, "kid_std": 0.0,
               "precision": 0.5, "recall": 1 / fid, "prd_f8": 1 / fid, "prd_f1_8": 0.7, "accuracy": 0.9}
    groups = {"head": {"fid": head_fid, "kid_mean": 0.1, "accuracy": 0.8}, "tail": {"fid": tail_fid, "kid_mean": 0.1,
                                                                                   "accuracy": 0.3}}
    data = {"run": {"dataset": "toy", "rho": rho, "method": variant.split("~")[0], "variant": variant, "seed": seed},
            "sampling": {"sampler": "ddim", "steps": 5, "eta": 0.0, "omega": 1.0, "num_samples": 10},
            "feature_extractor": "toy", "overall": overall, "groups": groups}
    if halves is not None:
        data["reference_halves"] = {"seed": 0, "selection_fid": halves[0], "report_fid": halves[1]}
    path = tmp_path / f"{variant}-{seed}.json"
    path.write_text(__import__("json").dumps(data))
    return path


def test_the_claims_table_from_metrics_files(tmp_path):
    """Three seeds where CORAL's FID is 1 below DDPM's: C1 holds against DDPM; its rows against CBDM and
    T2H (not run) are not covered, so C1 is inconclusive and says which. Without separation files C4 is
    not covered."""
    main = {}
    for seed in range(3):
        main[_metrics(tmp_path, "coral", seed, 6.0 + seed / 10, 5.0, 40.0 - seed)] = None
        main[_metrics(tmp_path, "ddpm", seed, 7.0 + seed / 10, 5.5, 45.0)] = None
    records = claims.read_records(main, {})
    assert set(records["setting"]) == {"toy-rho0.01"} and len(records) == 6
    rows, summary = claims.write_claims(records, tmp_path / "claims.csv", tmp_path / "claims.md", list(main))
    c1 = rows[(rows["claim"] == "C1") & (rows["comparison"] == "coral vs ddpm")].iloc[0]
    assert c1["effect"] == pytest.approx(1.0) and c1["verdict"] == HOLDS and c1["num_seeds"] == 3
    gap = rows[rows["claim"] == "C3"].iloc[0]  # tail gains 5, 6, 7 minus head gain 0.5
    assert gap["effect"] == pytest.approx(5.5) and gap["verdict"] == HOLDS
    verdicts = dict(zip(summary["claim"], summary["verdict"]))
    assert verdicts["C1"] == INCONCLUSIVE and verdicts["C4"] == NOT_COVERED and verdicts["C7"] == NOT_COVERED
    c1_reason = ("rows: 1 holds, 2 not covered (toy-rho0.01 / coral vs cbdm / fid: no seed has both runs; "
                 "toy-rho0.01 / coral vs t2h / fid: no seed has both runs)")
    assert summary.set_index("claim").loc["C1", "reason"] == c1_reason
    written = pd.read_csv(tmp_path / "claims.csv")
    assert written.loc[written["claim"] == "C1", "claim_verdict"].unique().tolist() == [INCONCLUSIVE]
    assert written.loc[written["claim"] == "C1", "claim_reason"].unique().tolist() == [c1_reason]
    assert "| C1 |" in (tmp_path / "claims.md").read_text()
    from coral.figures import claims_figure
    claims_figure(tmp_path / "claims.csv", tmp_path / "claims.png")
    assert (tmp_path / "claims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_row_records_the_guidance_of_the_runs_it_compares():
    """Per-method omega (coral 0.8, ddpm 0.8, cbdm 1.6): a comparison names one omega where both sides
    share it and each side's otherwise; a sweep lists its values."""
    claim = {"id": "X", "kind": "compare", "runs": "main", "ours": "coral", "against": ["ddpm", "cbdm"],
             "metrics": ["fid"], "better": "lower"}
    omega = {"coral": 0.8, "ddpm": 0.8, "cbdm": 1.6}
    frame = pd.DataFrame([{"runs": "main", "setting": "s", "method": m, "value": None, "seed": seed, "fid": 5.0 + seed,
                           "omega": w} for m, w in omega.items() for seed in range(2)])
    rows = claims.claim_rows(claim, frame)
    assert [row["omega"] for row in rows] == ["0.8", "coral: 0.8; cbdm: 1.6"]
    sweep = {"id": "C9", "kind": "same_best", "runs": "omega", "ours": "coral", "against": ["ddpm"],
             "metrics": ["fid"], "better": "lower"}
    frame = pd.DataFrame([{"runs": "omega", "setting": "s", "method": m, "value": w, "seed": seed, "fid": 5.0 + w,
                           "omega": w} for m in ("coral", "ddpm") for w in (2.0, 0.5, 1.0) for seed in range(2)])
    (row,) = claims.claim_rows(sweep, frame)
    assert row["omega"] == "0.5, 1, 2"


def test_no_worse_margin_uses_only_the_paired_seeds_baseline():
    """DDPM's head FID is 10 on seeds 0-2 and 70 on seed 3, which CORAL lacks. The margin is 5% of the
    paired baseline (10): 0.5, not 5% of 25 (1.25). Effects -0.7, -0.8, -0.9: mean -0.8, sd 0.1,
    interval -0.8 +- 4.303 * 0.1 / sqrt(3) = [-1.048, -0.552], below -0.5: contradicted (inside
    [-1.25, ...] it would hold)."""
    claim = {"id": "C3-head", "kind": "compare", "runs": "main", "ours": "coral", "against": ["ddpm"],
             "metrics": ["head_fid"], "better": "lower", "margin": 0.05}
    frame = records([("main", "s", "coral", None, seed, 0, 0, head) for seed, head in enumerate([10.7, 10.8, 10.9])]
                    + [("main", "s", "ddpm", None, seed, 0, 0, head) for seed, head in enumerate([10, 10, 10, 70])])
    (row,) = claims.claim_rows(claim, frame)
    assert row["num_seeds"] == 3 and row["effect"] == pytest.approx(-0.8)
    assert row["high"] == pytest.approx(-0.8 + 4.303 * 0.1 / math.sqrt(3), abs=1e-3)
    assert row["verdict"] == CONTRADICTED and row["reason"] == "the 95% interval lies below -0.5"


@pytest.mark.parametrize("effect,reason", [
    (Effect(math.inf, math.nan, math.nan, 3), "a value is not finite: the effect is inf"),
    (Effect(math.nan, math.nan, math.nan, 2), "a value is not finite: the effect is nan"),
    (Effect(-math.inf, math.nan, math.nan, 1), "a value is not finite: the effect is -inf"),
    (Effect(1.0, -math.inf, math.inf, 3), "a value is not finite: the interval is [-inf, inf]"),
])
def test_a_value_that_is_not_finite_is_inconclusive_and_says_so(effect, reason):
    assert verdict(effect) == (INCONCLUSIVE, reason)


def test_an_infinite_metric_is_inconclusive_even_where_both_sides_are_infinite():
    """CORAL's FID is inf on seed 1: effects 2, -inf, 2.5 (mean -inf). Where DDPM's is inf too, seed 1's
    effect is inf - inf = nan, still a paired seed (not dropped as if it had no run)."""
    claim = {"id": "X", "kind": "compare", "runs": "main", "ours": "coral", "against": ["ddpm"],
             "metrics": ["fid"], "better": "lower"}
    coral = [("main", "s", "coral", None, seed, fid, 0, 0) for seed, fid in enumerate([5.0, math.inf, 5.5])]
    for ddpm, effect in (([7.0, 7.5, 8.0], "-inf"), ([7.0, math.inf, 8.0], "nan")):
        frame = records(coral + [("main", "s", "ddpm", None, seed, fid, 0, 0) for seed, fid in enumerate(ddpm)])
        (row,) = claims.claim_rows(claim, frame)
        assert row["num_seeds"] == 3 and row["verdict"] == INCONCLUSIVE
        assert row["reason"] == f"a value is not finite: the effect is {effect}"


def test_same_best_without_the_other_method_is_not_covered():
    """An omega study of CORAL alone: DDPM's best omega is unknown, so C9 is not covered (it raised
    'argmin of an empty sequence')."""
    claim = {"id": "C9", "kind": "same_best", "runs": "omega", "ours": "coral", "against": ["ddpm"],
             "metrics": ["fid"], "better": "lower"}
    frame = records([("omega", "s", "coral", w, seed, 5.0 + w + seed, 0, 0) for w in (0.5, 1.0) for seed in range(2)])
    (row,) = claims.claim_rows(claim, frame)
    assert row["verdict"] == NOT_COVERED and row["num_seeds"] == 0
    assert row["reason"] == "the study has no ddpm runs with fid"


C9 = {"id": "C9", "kind": "same_best", "runs": "omega", "ours": "coral", "against": ["ddpm"], "metrics": ["fid"],
      "better": "lower"}


def test_same_best_chooses_on_the_selection_half_and_tests_on_the_report_half():
    """(selection, report, whole-reference) FID per omega and seed. On the selection half CORAL is best at
    0.5 (mean 5 vs 6) and DDPM at 1.0 (6.1 vs 7); on the whole reference both would be best at 1.0.
    Effect on CORAL's report half: -(6 - 8) = 2 and -(6.2 - 8.4) = 2.2, mean 2.1, sd 0.1414,
    interval 2.1 +- 12.706 * 0.1414 / sqrt(2) = [0.829, 3.371]: holds."""
    fids = {("coral", 0.5): [(5, 8, 9), (5, 8.4, 9)], ("coral", 1.0): [(6, 6, 6), (6, 6.2, 6)],
            ("ddpm", 0.5): [(7, 6.5, 7), (7, 6.5, 7)], ("ddpm", 1.0): [(6, 7, 6), (6.2, 7, 6.2)]}
    frame = pd.DataFrame([{"runs": "omega", "setting": "s", "method": method, "value": w, "seed": seed,
                           "selection_fid": selection, "report_fid": report, "fid": fid}
                          for (method, w), seeds in fids.items()
                          for seed, (selection, report, fid) in enumerate(seeds)])
    (row,) = claims.claim_rows(C9, frame)
    assert row["comparison"].startswith("coral best 0.5 vs ddpm best 1.0 (chosen on the reference's selection half")
    assert row["num_seeds"] == 2 and row["effect"] == pytest.approx(2.1)
    assert (row["low"], row["high"]) == pytest.approx((2.1 - 12.706 * 0.1, 2.1 + 12.706 * 0.1), abs=1e-3)
    assert row["verdict"] == HOLDS


def test_same_best_from_metrics_files_without_reference_halves_is_not_covered(tmp_path):
    """CORAL's omega-study files have reference_halves, DDPM's are from an older evaluation."""
    points = {}
    for w in (0.5, 1.0):
        for seed in range(2):
            points[_metrics(tmp_path, f"coral~w{w}", seed, 6.0, 5.0, 40.0, halves=(5.0 + w, 7.0 + w))] = {"value": w}
            points[_metrics(tmp_path, f"ddpm~w{w}", seed, 7.0, 5.0, 40.0)] = {"value": w}
    records = claims.read_records({}, {"omega": points})
    coral = records[records["method"] == "coral"].sort_values("value")
    assert coral["selection_fid"].tolist() == [5.5, 5.5, 6.0, 6.0] and coral["report_fid"].tolist() == [7.5, 7.5, 8, 8]
    assert records.loc[records["method"] == "ddpm", ["selection_fid", "report_fid"]].isna().all().all()
    (row,) = claims.claim_rows(C9, records)
    assert row["verdict"] == NOT_COVERED and row["reason"].startswith("a metrics file has no reference_halves")


def test_same_best_where_ours_lacks_the_others_best_value_is_not_covered():
    """DDPM is best at 2.0 (selection FID 4), which CORAL's runs do not include."""
    fids = {("coral", 0.5): 5.0, ("coral", 1.0): 6.0, ("ddpm", 1.0): 6.0, ("ddpm", 2.0): 4.0}
    frame = pd.DataFrame([{"runs": "omega", "setting": "s", "method": method, "value": w, "seed": seed, "fid": fid,
                           "selection_fid": fid, "report_fid": fid} for (method, w), fid in fids.items()
                          for seed in range(2)])
    (row,) = claims.claim_rows(C9, frame)
    assert row["verdict"] == NOT_COVERED and row["reason"] == "coral has no run at 2.0"


def test_best_in_range_never_pools_the_runs_of_different_methods():
    """A tau_r study with CORAL and DDPM runs. CORAL: outside 6, 6; inside 5, 5.2: effects 1, 0.8 (mean 0.9).
    DDPM: outside 4, 4; inside 7, 7.4: effects -3, -3.4 (mean -3.2). Without `method`, a row per method;
    C7 in the registry names coral, so only CORAL's row."""
    claim = {"id": "X", "kind": "best_in_range", "runs": "tau_r", "range": [0.5, 1.0], "metrics": ["fid"],
             "better": "lower"}
    fids = {("coral", 0.3): [6.0, 6.0], ("coral", 1.0): [5.0, 5.2],
            ("ddpm", 0.3): [4.0, 4.0], ("ddpm", 1.0): [7.0, 7.4]}
    frame = records([("tau_r", "s", method, v, seed, fid, 0, 0) for (method, v), f in fids.items()
                     for seed, fid in enumerate(f)])
    coral, ddpm = claims.claim_rows(claim, frame)
    assert coral["comparison"] == "coral best in [0.5, 1.0] vs best outside" and coral["effect"] == pytest.approx(0.9)
    assert ddpm["comparison"].startswith("ddpm ") and ddpm["effect"] == pytest.approx(-3.2)
    (c7,) = [c for c in claims.registry() if c["id"] == "C7"]
    (row,) = claims.claim_rows(c7, frame)
    assert row["effect"] == pytest.approx(0.9) and c7["method"] == "coral"


@pytest.mark.parametrize("verdicts,expected", [
    ([HOLDS, HOLDS], HOLDS),
    ([HOLDS, NOT_COVERED], INCONCLUSIVE),       # a row not covered: the claim cannot hold
    ([CONTRADICTED, NOT_COVERED], CONTRADICTED),
    ([INCONCLUSIVE, CONTRADICTED, HOLDS], CONTRADICTED),
    ([NOT_COVERED, NOT_COVERED], NOT_COVERED),
])
def test_a_claim_holds_only_where_every_row_is_covered_and_holds(verdicts, expected):
    assert claims.claim_verdict([{"verdict": v} for v in verdicts]) == expected


def test_c4_does_not_hold_on_the_overall_silhouette_alone():
    """Silhouette effects 0.40, 0.42, 0.44 (interval 0.42 +- 4.303 * 0.02 / sqrt(3), above 0: holds); no
    run has a tail silhouette, so that row is not covered and C4 is inconclusive, naming it."""
    frame = pd.DataFrame([{"runs": "main", "setting": "s", "method": method, "value": None, "seed": seed,
                           "silhouette": base + 0.02 * seed * (method == "coral"), "silhouette_tail": math.nan}
                          for method, base in (("coral", 0.9), ("ddpm", 0.5)) for seed in range(3)])
    (c4,) = [c for c in claims.registry() if c["id"] == "C4"]
    rows, summary = claims.judge(frame, [c4])
    assert rows["verdict"].tolist() == [HOLDS, NOT_COVERED]
    assert rows["low"].iloc[0] == pytest.approx(0.42 - 4.303 * 0.02 / math.sqrt(3), abs=1e-3)
    assert summary["verdict"].tolist() == [INCONCLUSIVE]
    assert summary["reason"].tolist() == ["rows: 1 holds, 1 not covered (s / silhouette_tail: no silhouette_tail "
                                          "for these runs)"]


def test_the_claim_rule_is_stated_identically_in_code_docstring_and_method_doc():
    from pathlib import Path
    def flat(text):
        return " ".join(text.split())
    method = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text()
    for text in (claims.__doc__, claims.VERDICT_RULE, method):
        assert claims.CLAIM_RULE in flat(text)
