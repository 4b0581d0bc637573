"""Time the evaluation metrics at paper scale on given features, and measure what PRD's deviation does.

    python benchmarks/metrics_bench.py                                # both parts, paper (ImageNet-LT) sizes
    python benchmarks/metrics_bench.py --parts timing --classes 100 --samples 5000 --reference 5000

Part `timing`: overall FID, IS, KID, precision/recall (k = 5) and PRD, and per-class FID, KID and
precision/recall, of C classes of class-clustered Gaussian features (D dims, stratified labels)
against a reference set of the same kind; feature extraction is not included. Also times, on a
part of the data, the code these replace (torch-fidelity's precision/recall and per-class FID).
Part `prd_effect`: F_8 and F_1/8 of the reference PRD (scikit-learn MiniBatchKMeans, 20 x C clusters,
best of 10 seedings: the code before the cap) against coral.fidelity.prd_scores with 20 x C clusters
and with capped clusters, on three generated sets (same distribution, tail classes dropped, shifted).
Each part replaces its section of the output JSON (default benchmarks/results/metrics-cpu.json);
prd_effect saves each scenario when done and, run again with the same sizes, skips those already there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from coral.fidelity import (class_frechet_distances, class_members, frechet_distance, kernel_distance,  # noqa: E402
                            max_f_beta, prd_curve, prd_scores, precision_recall)

OUT = Path(__file__).resolve().parent / "results" / "metrics-cpu.json"


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_1_5_15_min_at_start": list(os.getloadavg())}


def class_features(means: torch.Tensor, labels: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Features (N, D): the class mean of each label plus isotropic Gaussian noise of std `noise`."""
    return means[labels] + noise * torch.randn(len(labels), means.shape[1], generator=generator)


def synthetic_sets(classes: int, gen_n: int, real_n: int, dims: int, seed: int):
    """(gen, gen_labels, real, real_labels): class-clustered Gaussians, stratified labels. The generated
    set's class means are moved by N(0, 0.1^2) per dimension and its noise is 1.02 x the real one (in
    2048 dims that gives precision ~0.3 and recall ~0.95 at 100 classes: neither 0 nor 1)."""
    g = torch.Generator().manual_seed(seed)
    means = 0.7 * torch.randn(classes, dims, generator=g)
    real_labels = torch.arange(real_n) % classes
    gen_labels = torch.arange(gen_n) % classes
    real = class_features(means, real_labels, 1.0, g)
    gen = class_features(means + 0.1 * torch.randn(classes, dims, generator=g), gen_labels, 1.02, g)
    return gen, gen_labels, real, real_labels


def torch_fidelity_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID as torch-fidelity computes it (the per-class route before the batched one)."""
    stats = [fid_features_to_statistics(x) for x in (a, b)]
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def timing(args) -> dict:
    gen, gen_labels, real, real_labels = synthetic_sets(args.classes, args.samples, args.reference, args.dims, 0)
    # IS from synthetic logits that mostly name the generated label
    logits = 4.0 * torch.nn.functional.one_hot(gen_labels, args.classes).float() + torch.randn(len(gen), args.classes)
    seconds, values = {}, {}
    values["fid"], seconds["overall_fid"] = timed(lambda: frechet_distance(gen, real))
    isc, seconds["overall_isc"] = timed(lambda: isc_features_to_metric(logits, splits=10))
    values["isc"] = isc["inception_score_mean"]
    (values["kid_mean"], values["kid_std"]), seconds["overall_kid"] = timed(
        lambda: kernel_distance(gen, real, 100, 1000))
    (values["precision"], values["recall"]), seconds["overall_precision_recall"] = timed(
        lambda: precision_recall(gen, real, 5))
    clusters = min(20 * args.classes, args.prd_max_clusters)
    (values["prd_f8"], values["prd_f1_8"]), seconds["overall_prd"] = timed(
        lambda: prd_scores(gen, real, clusters, 1001, args.prd_runs, args.prd_kmeans_steps))
    fids, seconds["per_class_fid"] = timed(
        lambda: class_frechet_distances(gen, gen_labels, real, real_labels, args.classes))
    gen_members, real_members = class_members(gen_labels, args.classes), class_members(real_labels, args.classes)
    pairs = [(gen[gen_members[c]], real[real_members[c]]) for c in range(args.classes)]
    kids, seconds["per_class_kid"] = timed(lambda: [kernel_distance(a, b, 100, 1000) for a, b in pairs])
    prcs, seconds["per_class_precision_recall"] = timed(lambda: [precision_recall(a, b, 5) for a, b in pairs])
    values.update(per_class_fid_mean=float(np.mean(fids)), per_class_kid_mean=float(np.mean([k[0] for k in kids])),
                  per_class_kid_std_reported=sum(k[1] is not None for k in kids),
                  per_class_precision_mean=float(np.mean([p[0] for p in prcs])),
                  per_class_recall_mean=float(np.mean([p[1] for p in prcs])))
    total = sum(seconds.values())

    # the code these replace, on part of the data (extrapolated: distances grow as N^2, per class as C)
    n = min(args.replaced_samples, len(gen), len(real))
    _, ours_part = timed(lambda: precision_recall(gen[:n], real[:n], 5))
    tf_prc, tf_part = timed(lambda: prc_features_to_metric(gen[:n], real[:n], prc_neighborhood=5, prc_batch_size=2048,
                                                           save_cpu_ram=True, verbose=False))
    ours_prc = precision_recall(gen[:n], real[:n], 5)
    scale = len(gen) * len(real) / n ** 2
    few = min(args.replaced_classes, args.classes)
    _, tf_fid_part = timed(lambda: [torch_fidelity_fid(a, b) for a, b in pairs[:few]])
    replaced = {
        "precision_recall_samples": n,
        "torch_fidelity_precision_recall_seconds": tf_part,
        "ours_precision_recall_seconds": ours_part,
        "same_result": [tf_prc[KEY_METRIC_PRECISION], tf_prc[KEY_METRIC_RECALL]] == list(ours_prc),
        "torch_fidelity_precision_recall_seconds_extrapolated_to_full": tf_part * scale,
        "per_class_fid_classes_timed": few,
        "torch_fidelity_per_class_fid_seconds_extrapolated_to_all_classes": tf_fid_part * args.classes / few,
    }
    return {"sizes": {"classes": args.classes, "generated": args.samples, "reference": args.reference,
                      "dims": args.dims, "kid_subsets": 100, "kid_subset_size": 1000, "prc_neighborhood": 5,
                      "prd_clusters": clusters, "prd_runs": args.prd_runs, "prd_kmeans_steps": args.prd_kmeans_steps,
                      "prd_angles": 1001},
            "seconds": seconds, "total_seconds": total, "goal_seconds": 600, "goal_met": total < 600,
            "values": values, "replaced_code": replaced,
            "load_average_1_5_15_min_at_end": list(os.getloadavg())}


def prd_full(gen: np.ndarray, real: np.ndarray, num_clusters: int, num_runs: int) -> dict:
    """PRD as before the cap: MiniBatchKMeans(n_clusters, n_init=10, random_state=run) on the union,
    curves averaged over runs. Also each run's own (F_8, F_1/8), to show the run-to-run spread."""
    union = np.concatenate([gen, real])
    precisions, recalls, single = [], [], []
    for run in range(num_runs):
        assignment = MiniBatchKMeans(n_clusters=num_clusters, n_init=10, random_state=run).fit_predict(union)
        gen_hist = np.bincount(assignment[:len(gen)], minlength=num_clusters) / len(gen)
        real_hist = np.bincount(assignment[len(gen):], minlength=num_clusters) / len(real)
        precision, recall = prd_curve(gen_hist, real_hist, 1001)
        precisions.append(precision)
        recalls.append(recall)
        single.append([max_f_beta(precision, recall, 8.0), max_f_beta(precision, recall, 1 / 8)])
    precision, recall = np.mean(precisions, axis=0), np.mean(recalls, axis=0)
    return {"f8": max_f_beta(precision, recall, 8.0), "f1_8": max_f_beta(precision, recall, 1 / 8),
            "per_run": single}


def prd_effect(args, previous: dict | None, save) -> None:
    """Each scenario's numbers, saved (save(section)) as soon as they exist; scenarios already in
    `previous` (an earlier, interrupted run with the same sizes) are kept, not run again."""
    classes, per_class, dims = args.effect_classes, args.effect_per_class, args.effect_dims
    g = torch.Generator().manual_seed(1)
    means = 0.7 * torch.randn(classes, dims, generator=g)
    labels = torch.arange(classes * per_class) % classes
    real = class_features(means, labels, 1.0, g)
    kept = int(0.7 * classes)
    scenarios = {
        "same_distribution": class_features(means, labels, 1.0, g),
        f"tail_dropped_{classes - kept}_of_{classes}_classes": class_features(means, labels % kept, 1.0, g),
        "shifted_means_and_noisier": class_features(means + 0.5 * 0.7 * torch.randn(classes, dims, generator=g),
                                                    labels, 1.3, g),
    }
    full_clusters = 20 * classes
    caps = [full_clusters] + [c * classes for c in args.effect_clusters_per_class]
    sizes = {"classes": classes, "generated": classes * per_class, "reference": classes * per_class, "dims": dims,
             "full_runs": args.effect_full_runs, "ours_runs": 10, "prd_kmeans_steps": args.prd_kmeans_steps,
             "ours_clusters": caps}
    done = previous["scenarios"] if previous and previous.get("sizes") == sizes else {}
    section = {"machine": machine(), "sizes": sizes,
               "note": ("full: the code before the cap (MiniBatchKMeans, n_init=10, 20 x C clusters) with "
                        f"{args.effect_full_runs} runs (10 in the reference protocol; 10 would take hours here); ours: "
                        "coral.fidelity.prd_scores, 10 runs. ImageNet-LT's default cap (1000 clusters for 1000 "
                        f"classes) is 1 cluster per class: here {classes} clusters."),
               "scenarios": dict(done)}
    for name, gen in scenarios.items():
        if name in done:
            continue
        row = {}
        full, row["full_seconds"] = timed(lambda: prd_full(gen.numpy(), real.numpy(), full_clusters,
                                                           args.effect_full_runs))
        row[f"full_sklearn_{full_clusters}_clusters"] = full
        for clusters in caps:
            (f8, f1_8), seconds = timed(lambda: prd_scores(gen, real, clusters, 1001, 10, args.prd_kmeans_steps))
            row[f"ours_{clusters}_clusters"] = {"f8": f8, "f1_8": f1_8, "seconds": seconds}
        section["scenarios"][name] = row
        save(section)
        print(name, json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="timing,prd_effect", help="comma-separated: timing, prd_effect")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=50000, help="generated features")
    parser.add_argument("--reference", type=int, default=50000, help="reference features")
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--prd-max-clusters", type=int, default=1000)
    parser.add_argument("--prd-kmeans-steps", type=int, default=100)
    parser.add_argument("--prd-runs", type=int, default=10)
    parser.add_argument("--replaced-samples", type=int, default=10000,
                        help="features per set for timing torch-fidelity's precision/recall")
    parser.add_argument("--replaced-classes", type=int, default=5, help="classes for timing torch-fidelity's FID")
    parser.add_argument("--effect-classes", type=int, default=100)
    parser.add_argument("--effect-per-class", type=int, default=50, help="generated and real features per class")
    parser.add_argument("--effect-dims", type=int, default=2048)
    parser.add_argument("--effect-full-runs", type=int, default=2)
    parser.add_argument("--effect-clusters-per-class", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - {"timing", "prd_effect"})
    if unknown:
        parser.error(f"--parts: unknown {unknown}; allowed: timing, prd_effect")
    result = json.loads(args.out.read_text()) if args.out.exists() else {}

    def save(part: str, section: dict) -> None:
        result[part] = section
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    if "timing" in parts:
        save("timing", {"machine": machine(), **timing(args)})
        print(json.dumps(result["timing"], indent=2), flush=True)
    if "prd_effect" in parts:
        prd_effect(args, result.get("prd_effect"), lambda section: save("prd_effect", section))


if __name__ == "__main__":
    main()
