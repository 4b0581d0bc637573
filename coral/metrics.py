"""The metrics stage (rules reference_features and evaluate, docs/method.md §6): features of the
reference set and of a sample set, and on them the metrics overall, per class and per head/medium/tail
group.

Features come from torch-fidelity's extractors: the balanced reference set's once per dataset
(`write_reference_features`), the samples' in each evaluation. IS is torch-fidelity's; the distances
between the two sets of features are coral.fidelity's.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from coral import identity, lineage
from coral.classifier import FEATURE_EXTRACTOR_NAME, load_classifier_checkpoint
from coral.columns import GROUP_METRICS, PER_CLASS_COLUMNS
from coral.data import load_reference, load_split
from coral.longtail import class_groups
from coral.fidelity import (HALVES_SEED, class_frechet_distances, class_members, compare_features,
                            frechet_distance, kernel_distance, precision_recall, prd_scores, reference_halves)
from coral.io import atomic_path, provenance, sha256_file, write_json
from coral.progress import Progress
from coral.sections import EvaluateConfig, ExtractorConfig

log = logging.getLogger(__name__)

# eval.feature_extractor -> (torch-fidelity name, layer for FID/KID/PRC/PRD, layer for IS)
FEATURE_EXTRACTORS = {
    "classifier": (FEATURE_EXTRACTOR_NAME, "penultimate", "logits"),
    "inception-v3-compat": ("inception-v3-compat", "2048", "logits_unbiased"),
}


# ---------------------------------------------------------------- features

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


@dataclass
class ReferenceFeatures:
    features: torch.Tensor  # float32 (N, D): the layer of FID, KID, precision/recall and PRD
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    image_shape: tuple[int, ...]  # (C, H, W) of the reference images
    meta: dict  # feature_extractor, layer, weights, weights_sha256

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def feature_weights(eval_cfg: EvaluateConfig, classifier_ckpt: str | Path) -> str:
    """The weights file of the feature extractor: the classifier checkpoint or the Inception file."""
    if eval_cfg.feature_extractor == "inception-v3-compat":
        return str(eval_cfg.inception_weights_path)
    return str(classifier_ckpt)


def _check_classifier_fits(classifier_ckpt: str | Path, image_shape: tuple[int, ...], num_classes: int,
                           where: str | Path) -> dict:
    checkpoint = load_classifier_checkpoint(classifier_ckpt)
    if (checkpoint["image_size"], checkpoint["num_classes"]) != (image_shape[-1], num_classes):
        raise ValueError(f"{classifier_ckpt}: classifier trained at image_size {checkpoint['image_size']} with "
                         f"{checkpoint['num_classes']} classes; the reference set {where} has "
                         f"{image_shape[-1]}x{image_shape[-1]} images of {num_classes} classes")
    return checkpoint


def write_reference_features(reference_npz: str | Path, weights: str | Path, extractor: ExtractorConfig,
                             out_npz: str | Path) -> None:
    """Features of the balanced reference set, written once per dataset and read by every evaluation.

    weights: the classifier checkpoint (feature_extractor classifier) or the Inception weights file.
    out_npz holds features (N, D) float32, labels, class_names, image_shape and meta (extractor,
    layer, weights file and its SHA-256, which evaluate checks against its own extractor).
    """
    if not Path(weights).is_file():
        raise ValueError(f"weights: {str(weights)!r} is not a file; expected the {extractor.feature_extractor} "
                         "feature extractor's weights (classifier checkpoint or Inception weights file)")
    real = load_reference(reference_npz)
    fidelity_name, layer, _ = FEATURE_EXTRACTORS[extractor.feature_extractor]
    if fidelity_name == FEATURE_EXTRACTOR_NAME:
        _check_classifier_fits(weights, tuple(real.images.shape[1:]), real.num_classes, reference_npz)
    features = extract_features(real.images, fidelity_name, [layer], weights, extractor.batch_size,
                                "reference")[layer]
    meta = {"feature_extractor": extractor.feature_extractor, "layer": layer, "weights": str(weights),
            "weights_sha256": sha256_file(weights)}
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.numpy().astype(np.float32), labels=real.labels.numpy(),
                     class_names=np.array(real.class_names), image_shape=np.array(real.images.shape[1:]),
                     meta=np.array(json.dumps(meta)))
    lineage.record([out_npz], "reference_features", [reference_npz, weights],
                   {"evaluate": extractor.as_dict()}, identity.features(extractor.as_dict()))


def load_reference_features(path: str | Path) -> ReferenceFeatures:
    """Reference features written by write_reference_features."""
    keys = ["features", "labels", "class_names", "image_shape", "meta"]
    with lineage.reading(path, f"the reference features file (arrays {', '.join(keys)})", "reference_features"):
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in keys}
    features, labels = arrays["features"], arrays["labels"]
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"{path}: features must be (N, D) with labels (N,), got {features.shape} and {labels.shape}")
    return ReferenceFeatures(torch.from_numpy(features), torch.from_numpy(labels.astype(np.int64)),
                             [str(s) for s in arrays["class_names"]], tuple(int(s) for s in arrays["image_shape"]),
                             json.loads(str(arrays["meta"])))


# ---------------------------------------------------------------- inputs

def _check_reference_features(path: str | Path, real: ReferenceFeatures, eval_cfg: EvaluateConfig, weights: str) -> None:
    """The reference features must come from the extractor and weights this evaluation uses."""
    if eval_cfg.feature_extractor == "classifier":
        sha = lineage.verify(weights, "the classifier", "train_classifier")
    else:
        sha = sha256_file(weights)
    if (real.meta.get("feature_extractor"), real.meta.get("weights_sha256")) != (eval_cfg.feature_extractor, sha):
        raise lineage.DamagedArtifact(f"{path}: features of {real.meta.get('feature_extractor')!r} with weights "
                         f"{real.meta.get('weights')} (sha256 {real.meta.get('weights_sha256')}), but this evaluation "
                         f"uses {eval_cfg.feature_extractor!r} with {weights} (sha256 {sha}); write them again "
                         "(rule reference_features)")


def _load_samples(samples_npz: str | Path, num_classes: int, image_shape: tuple[int, ...]):
    """(images uint8 (N, C, H, W), labels int64 (N,), meta dict) of a samples file, checked."""
    with lineage.reading(samples_npz, "the samples file (arrays images, labels, meta)", "sample"):
        with np.load(samples_npz, allow_pickle=False) as z:
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


def _check_per_class_counts(labels: torch.Tensor, num_classes: int, eval_cfg: EvaluateConfig, what: str) -> None:
    """Per-class precision/recall needs prc_neighborhood + 1 features per class (FID and KID need 2)."""
    needed = max(2, eval_cfg.prc_neighborhood + 1)
    counts = torch.bincount(labels, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < needed]
    if short:
        raise ValueError(f"{what}: classes {short[:20]}{' ...' if len(short) > 20 else ''} have "
                         f"{counts[short[:20]].tolist()} images; per-class metrics need at least {needed} "
                         "(eval.prc_neighborhood + 1) per class")


# ---------------------------------------------------------------- evaluate

def evaluate(samples_npz: str | Path, reference_features_npz: str | Path, split_npz: str | Path,
             classifier_ckpt: str | Path, eval_cfg: EvaluateConfig, out_json: str | Path, out_per_class_csv: str | Path) -> dict:
    """Metrics of generated samples against the balanced reference set: overall, per class, per group.

    reference_features_npz: the reference set's features (write_reference_features) from the
    extractor and weights of eval_cfg. Writes `out_json` (overall + group means + provenance) and
    `out_per_class_csv` (one row per class) and returns the JSON dict. A meaningless spread (see
    kernel_distance) is null in the JSON and an empty cell in the CSV.
    """
    weights = feature_weights(eval_cfg, classifier_ckpt)
    real = load_reference_features(reference_features_npz)
    _check_reference_features(reference_features_npz, real, eval_cfg, weights)
    num_classes = real.num_classes
    gen_images, gen_labels, meta = _load_samples(samples_npz, num_classes, real.image_shape)
    _check_per_class_counts(gen_labels, num_classes, eval_cfg, f"{samples_npz}: generated")
    _check_per_class_counts(real.labels, num_classes, eval_cfg, f"{reference_features_npz}: real")
    split = load_split(split_npz, with_images=False)
    if len(split.class_counts) != num_classes:
        raise ValueError(f"{split_npz}: {len(split.class_counts)} class counts, the reference set "
                         f"{reference_features_npz} has {num_classes} classes")
    checkpoint = _check_classifier_fits(classifier_ckpt, real.image_shape, num_classes, reference_features_npz)

    fidelity_name, feature_layer, isc_layer = FEATURE_EXTRACTORS[eval_cfg.feature_extractor]
    batch_size = eval_cfg.batch_size
    gen = extract_features(gen_images, fidelity_name, [feature_layer, isc_layer], weights, batch_size, "generated")
    gen_features = gen[feature_layer]
    # classifier accuracy always uses the coral classifier's logits
    if fidelity_name == FEATURE_EXTRACTOR_NAME:
        gen_logits = gen["logits"]
    else:
        gen_logits = extract_features(gen_images, FEATURE_EXTRACTOR_NAME, ["logits"], classifier_ckpt, batch_size,
                                      "generated")["logits"]
    correct = (gen_logits.argmax(dim=1) == gen_labels).float()

    overall = _overall_metrics(gen_features, real.features, gen[isc_layer], correct, num_classes, eval_cfg)
    selection, report = reference_halves(real.labels, num_classes)
    halves = {"seed": HALVES_SEED, "selection_fid": frechet_distance(gen_features, real.features[selection]),
              "report_fid": frechet_distance(gen_features, real.features[report])}
    rows = _per_class_rows(gen_features, gen_labels, real, correct, split.class_counts, eval_cfg)
    extractor_label = eval_cfg.feature_extractor
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
        "reference_halves": halves,
        "eval_config": eval_cfg.as_dict(),
        "provenance": provenance(),
    }
    _warn_non_finite(overall, rows)
    write_json(out_json, result)
    with atomic_path(out_per_class_csv) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PER_CLASS_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)  # None (a meaningless spread) is written as an empty cell
    lineage.record([out_json, out_per_class_csv], "evaluate",
                   [samples_npz, reference_features_npz, split_npz, classifier_ckpt],
                   {"run": meta["run"], "evaluate": eval_cfg.as_dict()}, identity.evaluate(eval_cfg.as_dict()))
    return result


def prd_num_clusters(eval_cfg: EvaluateConfig, num_classes: int) -> int:
    """PRD's clusters: prd_clusters_per_class x C (the reference 20 x C), capped at prd_max_clusters."""
    return min(eval_cfg.prd_clusters_per_class * num_classes, eval_cfg.prd_max_clusters)


def _overall_metrics(gen_features: torch.Tensor, real_features: torch.Tensor, gen_isc_logits: torch.Tensor,
                     correct: torch.Tensor, num_classes: int, eval_cfg: EvaluateConfig) -> dict[str, float | None]:
    """Overall metrics of features (N_gen, D) vs (N_real, D); IS from logits (N_gen, K); correct (N_gen,) 0/1."""
    log.info("overall metrics")
    pair = compare_features(gen_features, real_features, eval_cfg.kid_subsets, eval_cfg.kid_subset_size,
                            eval_cfg.prc_neighborhood)
    isc = isc_features_to_metric(gen_isc_logits, splits=10)
    clusters = prd_num_clusters(eval_cfg, num_classes)
    log.info("PRD with %d clusters, %d runs of %d k-means steps", clusters, eval_cfg.prd_runs,
             eval_cfg.prd_kmeans_steps)
    prd_f8, prd_f1_8 = prd_scores(gen_features, real_features, clusters, eval_cfg.prd_angles,
                                  eval_cfg.prd_runs, eval_cfg.prd_kmeans_steps)
    return {"fid": pair["fid"], "isc_mean": isc[KEY_METRIC_ISC_MEAN], "isc_std": isc[KEY_METRIC_ISC_STD],
            "kid_mean": pair["kid_mean"], "kid_std": pair["kid_std"], "precision": pair["precision"],
            "recall": pair["recall"], "prd_f8": prd_f8, "prd_f1_8": prd_f1_8, "accuracy": float(correct.mean())}


def _per_class_rows(gen_features: torch.Tensor, gen_labels: torch.Tensor, real: ReferenceFeatures,
                    correct: torch.Tensor, class_counts: np.ndarray, eval_cfg: EvaluateConfig) -> list[dict]:
    """One row per class c (columns PER_CLASS_COLUMNS): generated with label c vs real class c."""
    num_classes = real.num_classes
    log.info("per-class FID of %d classes", num_classes)
    fids = class_frechet_distances(gen_features, gen_labels, real.features, real.labels, num_classes)
    gen_members, real_members = class_members(gen_labels, num_classes), class_members(real.labels, num_classes)
    groups = class_groups(class_counts)
    rows = []
    for c in Progress(range(num_classes), desc="per-class KID, precision/recall", unit="class"):
        gen_c, real_c = gen_features[gen_members[c]], real.features[real_members[c]]
        kid_mean, kid_std = kernel_distance(gen_c, real_c, eval_cfg.kid_subsets, eval_cfg.kid_subset_size)
        precision, recall = precision_recall(gen_c, real_c, eval_cfg.prc_neighborhood)
        rows.append({"class": c, "class_name": real.class_names[c], "train_count": int(class_counts[c]),
                     "group": groups[c], "num_generated": len(gen_c), "num_real": len(real_c), "fid": fids[c],
                     "kid_mean": kid_mean, "kid_std": kid_std, "precision": precision, "recall": recall,
                     "accuracy": float(correct[gen_members[c]].mean())})
    return rows


def _group_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of GROUP_METRICS over the classes of each non-empty head/medium/tail group."""
    means = {}
    for group in ("head", "medium", "tail"):
        members = [row for row in rows if row["group"] == group]
        if members:
            means[group] = {k: float(np.mean([row[k] for row in members])) for k in GROUP_METRICS}
    return means


def _warn_non_finite(overall: dict[str, float | None], rows: list[dict]) -> None:
    """Log metrics that came out NaN or infinite (a None spread is intended, not reported)."""
    bad = [k for k, v in overall.items() if v is not None and not math.isfinite(v)]
    bad += [f"class {row['class']} {k}" for row in rows for k in GROUP_METRICS if not math.isfinite(row[k])]
    if bad:
        log.warning("non-finite metrics: %s", ", ".join(bad))
