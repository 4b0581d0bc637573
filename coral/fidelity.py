"""The distances between two sets of features (N, D) of docs/method.md §6: FID (overall, per class,
against the reference set's two halves), KID, improved precision/recall and PRD (Sajjadi et al. 2018).

KID and its kernel are torch-fidelity's; FID and precision/recall are computed here, exactly, in
batches and on the GPU when there is one (tests check them against torch-fidelity and scipy); PRD
clusters with a mini-batch k-means of bounded length (prd_scores).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kernel_mmd, kid_features_to_metric

from coral.chunks import DISTANCE_BLOCK, FID_BATCH_ELEMENTS, KMEANS_BATCH
from coral.progress import Progress
from coral.tensors import default_device

HALVES_SEED = 0  # the split of the reference set into a selection and a report half (reference_halves)


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


def class_members(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
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
    for members in class_members(labels, num_classes):
        shuffled = members[torch.randperm(len(members), generator=generator)]
        selection.append(shuffled[: len(members) // 2])
        report.append(shuffled[len(members) // 2:])
    return torch.cat(selection).sort().values, torch.cat(report).sort().values


def class_frechet_distances(gen: torch.Tensor, gen_labels: torch.Tensor, real: torch.Tensor,
                            real_labels: torch.Tensor, num_classes: int) -> list[float]:
    """FID of each class: generated features with label c vs real ones with label c (>= 2 of each).

    Classes with the same numbers of generated and real features are stacked and computed together.
    """
    gen_members, real_members = class_members(gen_labels, num_classes), class_members(real_labels, num_classes)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for c in range(num_classes):
        by_shape.setdefault((len(gen_members[c]), len(real_members[c])), []).append(c)
    device, dims = default_device(), gen.shape[1]
    fids = [math.nan] * num_classes
    for (n_gen, n_real), classes in by_shape.items():
        per_class = (n_gen + n_real) * dims + (2 * dims ** 2 if min(n_gen, n_real) >= dims else n_gen * n_real)
        step = max(1, FID_BATCH_ELEMENTS // per_class)
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
    starts = range(0, len(x), DISTANCE_BLOCK)
    for i in starts:
        for j in starts[i // DISTANCE_BLOCK:]:
            block = torch.cdist(x[i:i + DISTANCE_BLOCK], x[j:j + DISTANCE_BLOCK])
            rows = torch.cat([nearest[i:i + DISTANCE_BLOCK], block], 1)
            nearest[i:i + DISTANCE_BLOCK] = rows.topk(k + 1, dim=1, largest=False).values
            if j != i:
                columns = torch.cat([nearest[j:j + DISTANCE_BLOCK], block.T], 1)
                nearest[j:j + DISTANCE_BLOCK] = columns.topk(k + 1, dim=1, largest=False).values
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
    for i in range(0, len(gen), DISTANCE_BLOCK):
        for j in range(0, len(real), DISTANCE_BLOCK):
            distances = torch.cdist(gen[i:i + DISTANCE_BLOCK], real[j:j + DISTANCE_BLOCK])
            gen_inside[i:i + DISTANCE_BLOCK] |= (distances <= real_radii[None, j:j + DISTANCE_BLOCK]).any(1)
            real_inside[j:j + DISTANCE_BLOCK] |= (distances <= gen_radii[i:i + DISTANCE_BLOCK, None]).any(0)
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


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (K, D) of each row of x (N, D)."""
    centre_norms = (centres ** 2).sum(1)
    return torch.cat([(centre_norms - 2 * part @ centres.T).argmin(1) for part in x.split(DISTANCE_BLOCK)])


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

    Seeds: k-means++ on a random sample of max(3k, KMEANS_BATCH) points (as scikit-learn's
    MiniBatchKMeans). Then `steps` steps, each assigning KMEANS_BATCH random points to their
    nearest centres and moving every centre to the mean of all points it has been given so far;
    last, every point goes to its nearest centre. The seeding holds the sample's Gram matrix:
    36 MB at 1000 clusters, growing with the square of k.
    """
    n = len(x)
    sample = x[torch.randperm(n, generator=generator, device=x.device)[:max(3 * k, KMEANS_BATCH)]]
    centres = _kmeans_plus_plus(sample, k, generator)
    counts = torch.zeros(k, device=x.device)
    for _ in range(steps):
        batch = x[torch.randint(n, (min(n, KMEANS_BATCH),), generator=generator, device=x.device)]
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
    of mini-batch steps, and the caller caps the clusters (evaluate.prd_max_clusters; the cap's effect
    on F_8 and F_1/8 is measured by benchmarks/metrics_bench.py).
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
