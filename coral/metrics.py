"""Sample quality metrics of SPEC section 6: overall, per class, and per head/medium/tail group.

FID, IS, KID and precision/recall are torch-fidelity's own implementations, applied to features
extracted once per image set; PRD (Sajjadi et al. 2018) is implemented here.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset
from tqdm import tqdm

from coral import lineage
from coral.classifier import FEATURE_EXTRACTOR_NAME, load_classifier_checkpoint
from coral.data import LabeledImages, class_groups, load_reference, load_split
from coral.io import atomic_path, provenance, write_json

log = logging.getLogger(__name__)

EVAL_KEYS = ("feature_extractor", "batch_size", "prc_neighborhood", "kid_subsets", "kid_subset_size",
             "prd_clusters_per_class", "prd_angles", "prd_runs")
# eval.feature_extractor -> (torch-fidelity name, layer for FID/KID/PRC/PRD, layer for IS)
FEATURE_EXTRACTORS = {
    "classifier": (FEATURE_EXTRACTOR_NAME, "penultimate", "logits"),
    "inception-v3-compat": ("inception-v3-compat", "2048", "logits_unbiased"),
}
PER_CLASS_COLUMNS = ["class", "class_name", "train_count", "group", "num_generated", "num_real",
                     "fid", "kid_mean", "kid_std", "precision", "recall", "accuracy"]
GROUP_METRICS = ("fid", "kid_mean", "precision", "recall", "accuracy")
_PRC_BATCH_SIZE = 2048  # rows of the distance matrix held at once; does not change the result


# ---------------------------------------------------------------- PRD (Sajjadi et al. 2018)

def prd_curve(gen_hist: np.ndarray, real_hist: np.ndarray, num_angles: int = 1001,
              epsilon: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """PRD curve of two histograms over the same bins (each summing to 1).

    For slopes lambda = tan(angle), angle in linspace(epsilon, pi/2 - epsilon, num_angles):
    precision(lambda) = sum_bins min(lambda * real, gen), recall(lambda) = precision(lambda) / lambda.
    Returns (precision, recall), each of shape (num_angles,).
    """
    slopes = np.tan(np.linspace(epsilon, np.pi / 2 - epsilon, num_angles))
    precision = np.minimum(slopes[:, None] * real_hist[None, :], gen_hist[None, :]).sum(axis=1)
    recall = precision / slopes
    return np.clip(precision, 0.0, 1.0), np.clip(recall, 0.0, 1.0)


def max_f_beta(precision: np.ndarray, recall: np.ndarray, beta: float) -> float:
    """max over the curve of F_beta = (1 + beta^2) p r / (beta^2 p + r); beta > 1 weighs recall."""
    denominator = beta ** 2 * precision + recall
    f_beta = np.where(denominator > 0, (1 + beta ** 2) * precision * recall / np.maximum(denominator, 1e-30), 0.0)
    return float(f_beta.max())


def prd_scores(gen_features: np.ndarray, real_features: np.ndarray, num_clusters: int,
               num_angles: int = 1001, num_runs: int = 10, seed: int = 0) -> tuple[float, float]:
    """(F_8, F_1/8) of generated vs real features (N_gen, D) and (N_real, D).

    Each run clusters the union with MiniBatchKMeans (random_state seed + run) and compares the two
    cluster histograms; precision and recall curves are averaged over runs. F_8 is recall-like
    (does the generated set cover the real one?), F_1/8 precision-like.
    """
    gen_features, real_features = np.asarray(gen_features), np.asarray(real_features)
    union = np.concatenate([gen_features, real_features])
    precisions, recalls = [], []
    for run in range(num_runs):
        kmeans = MiniBatchKMeans(n_clusters=num_clusters, n_init=10, random_state=seed + run)
        assignment = kmeans.fit_predict(union)
        gen_hist = np.bincount(assignment[:len(gen_features)], minlength=num_clusters) / len(gen_features)
        real_hist = np.bincount(assignment[len(gen_features):], minlength=num_clusters) / len(real_features)
        precision, recall = prd_curve(gen_hist, real_hist, num_angles)
        precisions.append(precision)
        recalls.append(recall)
    precision, recall = np.mean(precisions, axis=0), np.mean(recalls, axis=0)
    return max_f_beta(precision, recall, 8.0), max_f_beta(precision, recall, 1.0 / 8.0)


# ---------------------------------------------------------------- torch-fidelity on features

def compare_features(gen_features: torch.Tensor, real_features: torch.Tensor, kid_subsets: int,
                     kid_subset_size: int, prc_neighborhood: int) -> dict[str, float]:
    """FID, KID (mean, std) and precision/recall of generated (N_gen, D) vs real (N_real, D) features.

    All four are torch-fidelity's implementations; the KID subset size is capped at min(N_gen, N_real).
    """
    gen_features, real_features = gen_features.cpu(), real_features.cpu()
    fid = fid_statistics_to_metric(fid_features_to_statistics(gen_features),
                                   fid_features_to_statistics(real_features), verbose=False)
    kid = kid_features_to_metric(gen_features, real_features, kid_subsets=kid_subsets,
                                 kid_subset_size=min(kid_subset_size, len(gen_features), len(real_features)),
                                 verbose=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # distances only; results come back to the CPU
    prc = prc_features_to_metric(gen_features.to(device), real_features.to(device),
                                 prc_neighborhood=prc_neighborhood, prc_batch_size=_PRC_BATCH_SIZE,
                                 save_cpu_ram=True, verbose=False)
    return {"fid": fid[KEY_METRIC_FID], "kid_mean": kid[KEY_METRIC_KID_MEAN], "kid_std": kid[KEY_METRIC_KID_STD],
            "precision": prc[KEY_METRIC_PRECISION], "recall": prc[KEY_METRIC_RECALL]}


class _ImageDataset(Dataset):
    """uint8 images (N, C, H, W) as a torch Dataset of (C, H, W) tensors, gray optionally repeated to RGB."""

    def __init__(self, images: torch.Tensor, to_rgb: bool = False):
        self.images = images
        self.to_rgb = to_rgb and images.shape[1] == 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i]
        return image.expand(3, -1, -1).contiguous() if self.to_rgb else image


def extract_features(images: torch.Tensor, fidelity_name: str, layers: list[str], weights_path: str,
             batch_size: int, desc: str) -> dict[str, torch.Tensor]:
    """torch-fidelity features {layer: (N, D)} of uint8 images (N, C, H, W)."""
    cuda = torch.cuda.is_available()
    extractor = create_feature_extractor(fidelity_name, layers, cuda=cuda,
                                         feature_extractor_weights_path=str(weights_path), verbose=False)
    dataset = _ImageDataset(images, to_rgb=fidelity_name != FEATURE_EXTRACTOR_NAME)
    log.info("extracting %s features of %d %s images", fidelity_name, len(images), desc)
    return get_featuresdict_from_dataset(dataset, extractor, batch_size, cuda, save_cpu_ram=True, verbose=True)


# ---------------------------------------------------------------- inputs

def _check_eval_cfg(eval_cfg: dict) -> None:
    missing = [k for k in EVAL_KEYS if k not in eval_cfg]
    if missing:
        raise ValueError(f"eval config: missing keys {missing}; required: {list(EVAL_KEYS)}")
    if eval_cfg["feature_extractor"] not in FEATURE_EXTRACTORS:
        raise ValueError(f"eval.feature_extractor: got {eval_cfg['feature_extractor']!r}; "
                         f"allowed: {sorted(FEATURE_EXTRACTORS)}")
    if eval_cfg["feature_extractor"] == "inception-v3-compat":
        path = eval_cfg.get("inception_weights_path")
        if not path or not Path(path).is_file():
            raise ValueError(f"eval.inception_weights_path: got {path!r}; inception-v3-compat needs an existing "
                             "local file with torch-fidelity's Inception weights (nothing is downloaded)")


def _load_samples(samples_npz: str | Path, num_classes: int, image_shape: tuple[int, ...]):
    """(images uint8 (N, C, H, W), labels int64 (N,), meta dict) of a samples file, checked."""
    with np.load(samples_npz, allow_pickle=False) as z:
        missing = [k for k in ("images", "labels", "meta") if k not in z.files]
        if missing:
            raise ValueError(f"{samples_npz}: missing arrays {missing}; expected images, labels, meta")
        images, labels, meta = z["images"], z["labels"], json.loads(str(z["meta"]))
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{samples_npz}: images must be uint8 (N, {', '.join(map(str, image_shape))}) like the "
                         f"dataset, got {images.dtype} {images.shape}")
    if (len(images) == 0 or labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer)
            or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{samples_npz}: labels must be integers of shape (N,) = ({len(images)},) with N >= 1 and "
                         f"values in [0, {num_classes - 1}], got {labels.dtype} {labels.shape}")
    if "run" not in meta:
        raise ValueError(f"{samples_npz}: meta has no 'run' block (dataset, rho, method, seed)")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), meta


def _check_per_class_counts(samples_npz, labels: torch.Tensor, num_classes: int, eval_cfg: dict) -> None:
    """Per-class precision/recall needs prc_neighborhood + 1 images per class (KID needs 2)."""
    needed = max(2, eval_cfg["prc_neighborhood"] + 1)
    counts = torch.bincount(labels, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < needed]
    if short:
        raise ValueError(f"{samples_npz}: classes {short} have {counts[short].tolist()} generated images; "
                         f"per-class metrics need at least {needed} (eval.prc_neighborhood + 1) per class")


# ---------------------------------------------------------------- evaluate

def evaluate(samples_npz: str | Path, reference_npz: str | Path, split_npz: str | Path, classifier_ckpt: str | Path,
             eval_cfg: dict, out_json: str | Path, out_per_class_csv: str | Path) -> dict:
    """Metrics of generated samples against the balanced reference set: overall, per class, per group.

    Writes `out_json` (overall + group means + provenance) and `out_per_class_csv` (one row per
    class) and returns the JSON dict.
    """
    _check_eval_cfg(eval_cfg)
    real = load_reference(reference_npz)
    num_classes = real.num_classes
    gen_images, gen_labels, meta = _load_samples(samples_npz, num_classes, tuple(real.images.shape[1:]))
    _check_per_class_counts(samples_npz, gen_labels, num_classes, eval_cfg)
    split = load_split(split_npz, with_images=False)
    if len(split.class_counts) != num_classes:
        raise ValueError(f"{split_npz}: {len(split.class_counts)} class counts, dataset "
                         f"{reference_npz} has {num_classes} classes")
    checkpoint = load_classifier_checkpoint(classifier_ckpt)
    image_size = real.images.shape[-1]
    if (checkpoint["image_size"], checkpoint["num_classes"]) != (image_size, num_classes):
        raise ValueError(f"{classifier_ckpt}: classifier trained at image_size {checkpoint['image_size']} with "
                         f"{checkpoint['num_classes']} classes; the reference set {reference_npz} has "
                         f"{image_size}x{image_size} images of {num_classes} classes")

    # features of both sets, extracted once
    fidelity_name, feature_layer, isc_layer = FEATURE_EXTRACTORS[eval_cfg["feature_extractor"]]
    weights = classifier_ckpt if fidelity_name == FEATURE_EXTRACTOR_NAME else eval_cfg["inception_weights_path"]
    batch_size = eval_cfg["batch_size"]
    gen = extract_features(gen_images, fidelity_name, [feature_layer, isc_layer], weights, batch_size, "generated")
    real_features = extract_features(real.images, fidelity_name, [feature_layer], weights, batch_size, "real")[feature_layer]
    gen_features = gen[feature_layer]
    # classifier accuracy always uses the coral classifier's logits
    if fidelity_name == FEATURE_EXTRACTOR_NAME:
        gen_logits = gen["logits"]
    else:
        gen_logits = extract_features(gen_images, FEATURE_EXTRACTOR_NAME, ["logits"], classifier_ckpt, batch_size,
                              "generated")["logits"]
    correct = (gen_logits.argmax(dim=1) == gen_labels).float()

    overall = _overall_metrics(gen_features, real_features, gen[isc_layer], correct, num_classes, eval_cfg)
    rows = _per_class_rows(gen_features, gen_labels, real_features, real, correct, split.class_counts, eval_cfg)
    extractor_label = eval_cfg["feature_extractor"]
    if fidelity_name == FEATURE_EXTRACTOR_NAME:
        extractor_label = f"{FEATURE_EXTRACTOR_NAME} (not comparable with Inception FID)"
    result = {
        "run": meta["run"],
        "sampling": {k: v for k, v in meta.items() if k != "run"},
        "feature_extractor": extractor_label,
        "classifier_test_accuracy": checkpoint["test_accuracy"],
        "num_generated": len(gen_labels),
        "num_real": len(real.labels),
        "overall": overall,
        "groups": _group_means(rows),
        "eval_config": dict(eval_cfg),
        "provenance": provenance(),
    }
    _warn_non_finite(overall, rows)
    write_json(out_json, result)
    with atomic_path(out_per_class_csv) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PER_CLASS_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    lineage.record([out_json, out_per_class_csv], "evaluate", [samples_npz, reference_npz, split_npz, classifier_ckpt],
                   {"run": meta["run"], "evaluate": eval_cfg})
    return result


def _overall_metrics(gen_features: torch.Tensor, real_features: torch.Tensor, gen_isc_logits: torch.Tensor,
                     correct: torch.Tensor, num_classes: int, eval_cfg: dict) -> dict[str, float]:
    """Overall metrics of features (N_gen, D) vs (N_real, D); IS from logits (N_gen, K); correct (N_gen,) 0/1."""
    log.info("overall metrics")
    pair = compare_features(gen_features, real_features, eval_cfg["kid_subsets"], eval_cfg["kid_subset_size"],
                            eval_cfg["prc_neighborhood"])
    isc = isc_features_to_metric(gen_isc_logits, splits=10)
    log.info("PRD with %d clusters, %d runs", eval_cfg["prd_clusters_per_class"] * num_classes, eval_cfg["prd_runs"])
    prd_f8, prd_f1_8 = prd_scores(gen_features.numpy(), real_features.numpy(),
                                  eval_cfg["prd_clusters_per_class"] * num_classes,
                                  eval_cfg["prd_angles"], eval_cfg["prd_runs"])
    return {"fid": pair["fid"], "isc_mean": isc[KEY_METRIC_ISC_MEAN], "isc_std": isc[KEY_METRIC_ISC_STD],
            "kid_mean": pair["kid_mean"], "kid_std": pair["kid_std"], "precision": pair["precision"],
            "recall": pair["recall"], "prd_f8": prd_f8, "prd_f1_8": prd_f1_8, "accuracy": float(correct.mean())}


def _per_class_rows(gen_features: torch.Tensor, gen_labels: torch.Tensor, real_features: torch.Tensor,
                    real: LabeledImages, correct: torch.Tensor, class_counts: np.ndarray,
                    eval_cfg: dict) -> list[dict]:
    """One row per class c (columns PER_CLASS_COLUMNS): generated with label c vs real class c."""
    groups = class_groups(class_counts)
    rows = []
    for c in tqdm(range(real.num_classes), desc="per-class metrics", file=sys.stderr):
        gen_mask, real_mask = gen_labels == c, real.labels == c
        row = {"class": c, "class_name": real.class_names[c], "train_count": int(class_counts[c]),
               "group": groups[c], "num_generated": int(gen_mask.sum()), "num_real": int(real_mask.sum())}
        row.update(compare_features(gen_features[gen_mask], real_features[real_mask], eval_cfg["kid_subsets"],
                                    eval_cfg["kid_subset_size"], eval_cfg["prc_neighborhood"]))
        row["accuracy"] = float(correct[gen_mask].mean())
        rows.append(row)
    return rows


def _group_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of GROUP_METRICS over the classes of each non-empty head/medium/tail group."""
    means = {}
    for group in ("head", "medium", "tail"):
        members = [row for row in rows if row["group"] == group]
        if members:
            means[group] = {k: float(np.mean([row[k] for row in members])) for k in GROUP_METRICS}
    return means


def _warn_non_finite(overall: dict[str, float], rows: list[dict]) -> None:
    bad = [k for k, v in overall.items() if not math.isfinite(v)]
    bad += [f"class {row['class']} {k}" for row in rows for k in GROUP_METRICS if not math.isfinite(row[k])]
    if bad:
        log.warning("non-finite metrics: %s", ", ".join(bad))
