"""Sample quality metrics of docs/method.md §6: overall, per class, and per head/medium/tail group.

Features come from torch-fidelity's extractors: the balanced reference set's once per dataset
(`write_reference_features`, rule `reference_features`), the samples' in each evaluation. On them:
- IS and KID are torch-fidelity's own implementations;
- FID and improved precision/recall are computed here, exactly, in batches and on the GPU when
  there is one (tests check them against torch-fidelity and scipy);
- PRD (Sajjadi et al. 2018) is implemented here, with a capped number of clusters and a mini-batch
  k-means of bounded length: a documented deviation from the reference 20 x C clusters (see prd_scores).
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
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kernel_mmd, kid_features_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from coral import identity, lineage
from coral.classifier import FEATURE_EXTRACTOR_NAME, load_classifier_checkpoint
from coral.data import load_reference, load_split
from coral.longtail import class_groups
from coral.io import atomic_path, provenance, sha256_file, write_json
from coral.progress import Progress
from coral.sections import EvaluateConfig, ExtractorConfig
from coral.tensors import default_device

log = logging.getLogger(__name__)

# eval.feature_extractor -> (torch-fidelity name, layer for FID/KID/PRC/PRD, layer for IS)
FEATURE_EXTRACTORS = {
    "classifier": (FEATURE_EXTRACTOR_NAME, "penultimate", "logits"),
    "inception-v3-compat": ("inception-v3-compat", "2048", "logits_unbiased"),
}
PER_CLASS_COLUMNS = ["class", "class_name", "train_count", "group", "num_generated", "num_real",
                     "fid", "kid_mean", "kid_std", "precision", "recall", "accuracy"]
GROUP_METRICS = ("fid", "kid_mean", "precision", "recall", "accuracy")
HALVES_SEED = 0  # the split of the reference set into a selection and a report half (reference_halves)
# Sizes of the pieces worked on at once; they bound memory and do not change any result.
_BLOCK = 4096                # rows (and columns) of a distance block
_FID_BATCH_ELEMENTS = 2 ** 25  # float64 elements of the per-class features stacked into one FID batch
_KMEANS_BATCH = 2048         # points of one mini-batch k-means step


# ---------------------------------------------------------------- FID

def _frechet_batch(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """FID of each pair of stacked feature sets x1 (B, n1, D) and x2 (B, n2, D), n >= 2, in their dtype.

    FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), with sample covariances (ddof 1)
    S = a^T a, a = centred features / sqrt(n - 1) (n x D). sqrt(S1 S2) is never formed:
    - a set with fewer samples than dimensions (n1 < D, x1 being the smaller set): the nonzero
      eigenvalues of S1 S2 = a1^T a1 a2^T a2 are those of (a1 a2^T)(a1 a2^T)^T, so tr sqrt(S1 S2) is
      the nuclear norm of a1 a2^T (n1 x n2), the sum of its singular values;
    - both n >= D: S1 S2 is similar to R S2 R with R = S1^(1/2), so tr sqrt(S1 S2) is the sum of the
      square roots of the eigenvalues of that symmetric matrix.
    """
    if x1.shape[1] > x2.shape[1]:
        x1, x2 = x2, x1  # FID is symmetric
    mu1, mu2 = x1.mean(1), x2.mean(1)
    a1 = (x1 - mu1[:, None]) / math.sqrt(x1.shape[1] - 1)
    a2 = (x2 - mu2[:, None]) / math.sqrt(x2.shape[1] - 1)
    if x1.shape[1] < x1.shape[2]:
        tr_sqrt = torch.linalg.svdvals(a1 @ a2.mT).sum(-1)
    else:
        root = _psd_sqrt(a1.mT @ a1)
        tr_sqrt = torch.linalg.eigvalsh(root @ (a2.mT @ a2) @ root).clamp(min=0).sqrt().sum(-1)
    return ((mu1 - mu2) ** 2).sum(-1) + (a1 ** 2).sum((1, 2)) + (a2 ** 2).sum((1, 2)) - 2 * tr_sqrt


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square roots of symmetric PSD matrices (B, D, D); rounding's negative eigenvalues count as 0."""
    eigenvalues, eigenvectors = torch.linalg.eigh(s)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()[:, None, :]) @ eigenvectors.mT


def frechet_distance(gen: torch.Tensor, real: torch.Tensor) -> float:
    """FID of generated (N1, D) vs real (N2, D) features, in float64 on the GPU when there is one."""
    device = default_device()
    return float(_frechet_batch(gen.to(device, torch.float64)[None], real.to(device, torch.float64)[None])[0])


def _class_members(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Indices of each class's rows, class 0 first."""
    order = torch.argsort(labels, stable=True)
    return list(order.split(torch.bincount(labels, minlength=num_classes).tolist()))


def reference_halves(labels: torch.Tensor, num_classes: int, seed: int = HALVES_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint halves of the reference set, (selection, report), each holding half of
    every class (an odd one more goes to report), fixed by `seed`. Tuning omega on FID against the
    selection half and reporting FID against the report half keeps the choice off the reported number
    (tables.omega_tuned_table)."""
    generator = torch.Generator().manual_seed(seed)
    selection, report = [], []
    for members in _class_members(labels, num_classes):
        shuffled = members[torch.randperm(len(members), generator=generator)]
        selection.append(shuffled[: len(members) // 2])
        report.append(shuffled[len(members) // 2:])
    return torch.cat(selection).sort().values, torch.cat(report).sort().values


def class_frechet_distances(gen: torch.Tensor, gen_labels: torch.Tensor, real: torch.Tensor,
                            real_labels: torch.Tensor, num_classes: int) -> list[float]:
    """FID of each class: generated features with label c vs real ones with label c (>= 2 of each).

    Classes with the same numbers of generated and real features are stacked and computed together.
    """
    gen_members, real_members = _class_members(gen_labels, num_classes), _class_members(real_labels, num_classes)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for c in range(num_classes):
        by_shape.setdefault((len(gen_members[c]), len(real_members[c])), []).append(c)
    device, dims = default_device(), gen.shape[1]
    fids = [math.nan] * num_classes
    for (n_gen, n_real), classes in by_shape.items():
        per_class = (n_gen + n_real) * dims + (2 * dims ** 2 if min(n_gen, n_real) >= dims else n_gen * n_real)
        step = max(1, _FID_BATCH_ELEMENTS // per_class)
        for start in range(0, len(classes), step):
            part = classes[start:start + step]
            x1 = torch.stack([gen[gen_members[c]] for c in part]).to(device, torch.float64)
            x2 = torch.stack([real[real_members[c]] for c in part]).to(device, torch.float64)
            for c, fid in zip(part, _frechet_batch(x1, x2).tolist()):
                fids[c] = fid
    return fids


# ---------------------------------------------------------------- KID

def kernel_distance(gen: torch.Tensor, real: torch.Tensor, subsets: int,
                    subset_size: int) -> tuple[float, float | None]:
    """KID (mean, std) of generated (N1, D) vs real (N2, D) features: torch-fidelity's estimate
    (cubic polynomial kernel, unbiased MMD^2, its fixed seed) over `subsets` random subsets of
    min(subset_size, N1, N2) features of each set.

    The std is the spread of the estimate over subsets, and it can mean nothing: where the subsets
    are the whole of both sets (N1 = N2 <= subset_size, e.g. a class of 50 samples against its 50
    real images) every subset holds the same features in another order, so each gives the same
    MMD^2 and the "std" (~1e-7) is float rounding. Then the MMD^2 of the two sets is computed once
    and the std is None (JSON null, an empty CSV cell); likewise with a single subset.
    """
    size = min(subset_size, len(gen), len(real))
    gen, real = gen.cpu(), real.cpu()
    if size == len(gen) == len(real):
        return float(kernel_mmd(gen.numpy(), real.numpy())), None
    kid = kid_features_to_metric(gen, real, kid_subsets=subsets, kid_subset_size=size, verbose=False)
    return kid[KEY_METRIC_KID_MEAN], kid[KEY_METRIC_KID_STD] if subsets > 1 else None


# ---------------------------------------------------------------- precision / recall

def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of x (N, D), N > k, to its k-th nearest neighbour in x: the (k + 1)-th
    smallest entry of its row of the N x N distance matrix, the first being the row itself.

    Each block of the symmetric matrix is computed once and serves its rows and its columns.
    """
    nearest = torch.full((len(x), k + 1), math.inf, device=x.device)
    starts = range(0, len(x), _BLOCK)
    for i in starts:
        for j in starts[i // _BLOCK:]:
            block = torch.cdist(x[i:i + _BLOCK], x[j:j + _BLOCK])
            rows = torch.cat([nearest[i:i + _BLOCK], block], 1)
            nearest[i:i + _BLOCK] = rows.topk(k + 1, dim=1, largest=False).values
            if j != i:
                columns = torch.cat([nearest[j:j + _BLOCK], block.T], 1)
                nearest[j:j + _BLOCK] = columns.topk(k + 1, dim=1, largest=False).values
    return nearest[:, k]


def precision_recall(gen: torch.Tensor, real: torch.Tensor, k: int) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of generated (N1, D) vs real (N2, D)
    features, both sets larger than k; the same as torch-fidelity's prc_features_to_metric (tested).

    Each feature's ball has the radius of its k-th nearest neighbour in its own set. Precision: the
    fraction of generated features inside some real ball; recall: of real features inside some
    generated ball. Faster than torch-fidelity yet exact: a set's distances to itself are computed
    once per pair of blocks, and one pass over the generated-real distances gives both fractions.
    """
    device = default_device()
    gen, real = gen.to(device, torch.float32), real.to(device, torch.float32)
    gen_radii, real_radii = _knn_radii(gen, k), _knn_radii(real, k)
    gen_inside = torch.zeros(len(gen), dtype=torch.bool, device=device)
    real_inside = torch.zeros(len(real), dtype=torch.bool, device=device)
    for i in range(0, len(gen), _BLOCK):
        for j in range(0, len(real), _BLOCK):
            distances = torch.cdist(gen[i:i + _BLOCK], real[j:j + _BLOCK])
            gen_inside[i:i + _BLOCK] |= (distances <= real_radii[None, j:j + _BLOCK]).any(1)
            real_inside[j:j + _BLOCK] |= (distances <= gen_radii[i:i + _BLOCK, None]).any(0)
    return gen_inside.float().mean().item(), real_inside.float().mean().item()


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


def prd_num_clusters(eval_cfg: EvaluateConfig, num_classes: int) -> int:
    """PRD's clusters: prd_clusters_per_class x C (the reference 20 x C), capped at prd_max_clusters."""
    return min(eval_cfg.prd_clusters_per_class * num_classes, eval_cfg.prd_max_clusters)


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (K, D) of each row of x (N, D)."""
    centre_norms = (centres ** 2).sum(1)
    return torch.cat([(centre_norms - 2 * part @ centres.T).argmin(1) for part in x.split(_BLOCK)])


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k of the points x (M, D), M >= k, as k-means++ seeds them (Arthur and Vassilvitskii 2007): the
    first uniformly, each next with probability proportional to its squared distance to the nearest
    seed so far. The Gram matrix x x^T, computed at once, turns each step's distances into a row lookup."""
    gram = x @ x.T
    norms = gram.diagonal()

    def squared_distances(i: torch.Tensor) -> torch.Tensor:
        return (norms - 2 * gram[i[0]] + norms[i]).clamp(min=0)

    chosen = [torch.randint(len(x), (1,), generator=generator, device=x.device)]
    squared = squared_distances(chosen[0])
    for _ in range(k - 1):
        weights = torch.where(squared.sum() > 0, squared, torch.ones_like(squared))  # all seeds already: any
        chosen.append(torch.multinomial(weights, 1, generator=generator))
        squared = torch.minimum(squared, squared_distances(chosen[-1]))
    return x[torch.cat(chosen)].clone()


def kmeans_labels(x: torch.Tensor, k: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Cluster (0..k-1) of each point of x (N, D), N >= k, by mini-batch k-means (Sculley 2010).

    Seeds: k-means++ on a random sample of max(3k, _KMEANS_BATCH) points (as scikit-learn's
    MiniBatchKMeans). Then `steps` steps, each assigning _KMEANS_BATCH random points to their
    nearest centres and moving every centre to the mean of all points it has been given so far;
    last, every point goes to its nearest centre. The seeding holds the sample's Gram matrix:
    36 MB at 1000 clusters, growing with the square of k.
    """
    n = len(x)
    sample = x[torch.randperm(n, generator=generator, device=x.device)[:max(3 * k, _KMEANS_BATCH)]]
    centres = _kmeans_plus_plus(sample, k, generator)
    counts = torch.zeros(k, device=x.device)
    for _ in range(steps):
        batch = x[torch.randint(n, (min(n, _KMEANS_BATCH),), generator=generator, device=x.device)]
        nearest = _nearest(batch, centres)
        hits = torch.bincount(nearest, minlength=k).to(x.dtype)
        counts += hits
        sums = torch.zeros_like(centres).index_add_(0, nearest, batch)
        centres += (sums - hits[:, None] * centres) / counts.clamp(min=1)[:, None]
    return _nearest(x, centres)


def prd_scores(gen_features, real_features, num_clusters: int, num_angles: int = 1001, num_runs: int = 10,
               kmeans_steps: int = 100, seed: int = 0) -> tuple[float, float]:
    """(F_8, F_1/8) of generated vs real features (N_gen, D) and (N_real, D), arrays or tensors.

    Each run clusters the union into min(num_clusters, N_gen + N_real) clusters (kmeans_labels,
    seeded with seed + run) and compares the two cluster histograms; the precision and recall curves
    are averaged over runs. F_8 is recall-like (does the generated set cover the real one?), F_1/8
    precision-like.

    Deviation from Sajjadi et al.'s code (scikit-learn MiniBatchKMeans, best of 10 seedings, run to
    convergence) and from the reference 20 x C clusters: one k-means++ seeding per run, a fixed number
    of mini-batch steps, and the caller caps the clusters (prd_num_clusters). 20 x C clusters over
    ImageNet-LT's 100k features of 2048 dims took ~136 h on 2 CPU cores; benchmarks/metrics_bench.py
    measures the effect on F_8 and F_1/8 (benchmarks/results/metrics-cpu.json, "prd_effect").
    """
    device = default_device()
    gen = torch.as_tensor(np.asarray(gen_features), dtype=torch.float32)
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float32)
    union = torch.cat([gen, real]).to(device)
    k = min(num_clusters, len(union))
    precisions, recalls = [], []
    for run in Progress(range(num_runs), desc=f"PRD: k-means of {len(union)} points into {k} clusters", unit="run"):
        generator = torch.Generator(device=device).manual_seed(seed + run)
        assignment = kmeans_labels(union, k, kmeans_steps, generator).cpu()
        gen_hist = torch.bincount(assignment[:len(gen)], minlength=k).numpy() / len(gen)
        real_hist = torch.bincount(assignment[len(gen):], minlength=k).numpy() / len(real)
        precision, recall = prd_curve(gen_hist, real_hist, num_angles)
        precisions.append(precision)
        recalls.append(recall)
    precision, recall = np.mean(precisions, axis=0), np.mean(recalls, axis=0)
    return max_f_beta(precision, recall, 8.0), max_f_beta(precision, recall, 1.0 / 8.0)


# ---------------------------------------------------------------- overall comparison

def compare_features(gen_features: torch.Tensor, real_features: torch.Tensor, kid_subsets: int,
                     kid_subset_size: int, prc_neighborhood: int) -> dict[str, float | None]:
    """FID, KID (mean, std; std None where meaningless, see kernel_distance) and precision/recall
    (k = prc_neighborhood) of generated (N_gen, D) vs real (N_real, D) features."""
    kid_mean, kid_std = kernel_distance(gen_features, real_features, kid_subsets, kid_subset_size)
    precision, recall = precision_recall(gen_features, real_features, prc_neighborhood)
    return {"fid": frechet_distance(gen_features, real_features), "kid_mean": kid_mean, "kid_std": kid_std,
            "precision": precision, "recall": recall}


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
    gen_members, real_members = _class_members(gen_labels, num_classes), _class_members(real.labels, num_classes)
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
