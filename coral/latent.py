"""Latent structure of a trained model (docs/method.md §6): bottleneck features, t-SNE, separation scores.

Real images of the balanced set are noised to t = int(t_fraction * T), passed through the EMA
UNet with their true labels, and the pooled bottleneck (B, C_mid) is kept. How well the classes
separate is measured by numbers that do not depend on a picture:

- silhouette score with **cosine** distance (sklearn), overall and averaged over the points of
  each group's classes. Cosine is chosen because it ignores feature magnitude, which drifts with
  t and across models, and because CORAL's contrastive loss itself compares directions;
- k-NN class purity: the fraction of each point's k nearest neighbours (cosine distance, the
  point itself excluded) that share its label, averaged overall and per group.

t-SNE uses the same cosine distance, so the picture and the numbers see the same geometry.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_samples
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from coral import identity, lineage
from coral.data import load_reference, load_split
from coral.longtail import class_groups
from coral.diffusion import Diffusion
from coral.io import atomic_path, provenance, write_json
from coral.progress import Progress
from coral.checkpoint import load_model
from coral.sections import LATENT_INPUTS, LatentConfig
from coral.tensors import uint8_to_unit

METRIC = "cosine"
GROUPS = ("head", "medium", "tail")


@torch.no_grad()
def bottleneck_features(model: torch.nn.Module, diffusion: Diffusion, images_uint8: torch.Tensor | np.ndarray,
                        labels: torch.Tensor | np.ndarray, t_fraction: float = 0.1, seed: int = 0,
                        batch_size: int = 256, inputs: str = "clean") -> np.ndarray:
    """Pooled bottleneck features of real images, each with the time embedding of t = int(t_fraction * T).

    images_uint8: uint8 (N, C, H, W); labels: int (N,), the true classes (used as the condition).
    inputs 'clean': the network sees the clean image (the released code); 'noised': the image noised
    to t, with the noise for all N images drawn at once from a CPU torch.Generator seeded with `seed`
    (N*C*H*W float32 held in memory: 0.5 GB for 10,000 RGB 64x64 images), so it does not depend on
    batch_size or device. The model runs in eval mode (restored afterwards). Returns float32 (N, C_mid).
    """
    if inputs not in LATENT_INPUTS:
        raise ValueError(f"inputs: {inputs!r}; allowed: {', '.join(LATENT_INPUTS)}")
    if not 0.0 <= t_fraction < 1.0:
        raise ValueError(f"t_fraction: must be in [0, 1), got {t_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    images = torch.as_tensor(images_uint8)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(f"expected uint8 images (N, C, H, W) and labels (N,), "
                         f"got {images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}")
    device = next(model.parameters()).device
    t_value = int(t_fraction * diffusion.T)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator)

    was_training = model.training
    model.eval()
    features = []
    for start in Progress(range(0, len(images), batch_size), desc=f"bottleneck features ({inputs} images)",
                          unit="batch"):
        stop = start + batch_size
        x0 = uint8_to_unit(images[start:stop]).to(device)
        t = torch.full((len(x0),), t_value, dtype=torch.int64, device=device)
        x_t = x0 if inputs == "clean" else diffusion.q_sample(x0, t, noise[start:stop].to(device))
        _, bottleneck = model(x_t, t, labels[start:stop].to(device), return_bottleneck=True)
        features.append(bottleneck.float().cpu())
    model.train(was_training)
    return torch.cat(features).numpy()


def knn_purity_per_point(features: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Fraction of each point's k nearest neighbours (cosine, self excluded) sharing its label: (N,)."""
    n = len(features)
    if not 1 <= k < n:
        raise ValueError(f"knn_k: must be in [1, N-1] = [1, {n - 1}], got {k}")
    _, neighbours = NearestNeighbors(n_neighbors=k + 1, metric=METRIC).fit(features).kneighbors(features)
    # Drop each point itself; if exact duplicates hid it from its k+1 list, drop the farthest instead.
    is_self = neighbours == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    others = neighbours[~is_self].reshape(n, k)
    return (labels[others] == labels[:, None]).mean(axis=1)


def separation_scores(features: np.ndarray, labels: np.ndarray, class_groups_per_class: list[str],
                      k: int = 10) -> dict[str, float]:
    """Class separation of features (N, D) with labels (N,).

    class_groups_per_class: 'head' / 'medium' / 'tail' for each class id (coral.longtail.class_groups).
    Returns silhouette, knn_purity and, for each group g in head/medium/tail, silhouette_g and
    knn_purity_g (the per-point values averaged over points of that group's classes; NaN if the
    group has no points). Silhouette uses cosine distance and lies in [-1, 1]; purity in [0, 1],
    with chance level about (n_c - 1) / (N - 1) for a class of n_c points.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"expected features (N, D) and labels (N,), got {features.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(class_groups_per_class):
        raise ValueError(f"labels must lie in [0, {len(class_groups_per_class) - 1}] "
                         f"(one group per class), got range [{labels.min()}, {labels.max()}]")
    num_labels = len(np.unique(labels))
    if not 2 <= num_labels <= len(labels) - 1:
        raise ValueError(f"silhouette needs 2 <= number of classes present <= N-1, "
                         f"got {num_labels} classes for N={len(labels)}")
    silhouette = silhouette_samples(features, labels, metric=METRIC)
    purity = knn_purity_per_point(features, labels, k)
    point_groups = np.asarray(class_groups_per_class)[labels]

    scores = {"silhouette": float(silhouette.mean()), "knn_purity": float(purity.mean())}
    for group in GROUPS:
        members = point_groups == group
        scores[f"silhouette_{group}"] = float(silhouette[members].mean()) if members.any() else math.nan
        scores[f"knn_purity_{group}"] = float(purity[members].mean()) if members.any() else math.nan
    return scores


def tsne_embedding(features: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
    """2-D t-SNE (cosine distance, PCA init) of features (N, D) -> float32 (N, 2).

    The perplexity is capped at (N - 1) / 3, because sklearn looks at 3 * perplexity + 1
    neighbours and the neighbourhood must fit inside the data. The optimisation runs on one
    OpenMP thread: the result then does not depend on the machine's core count, and a busy machine
    cannot slow it down tenfold through thread oversubscription (seen on a loaded 2-core box).
    """
    n = len(features)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    if perplexity <= 0:
        raise ValueError(f"perplexity: must be > 0, got {perplexity}")
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), metric=METRIC,
                init="pca", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(np.asarray(features, dtype=np.float32)).astype(np.float32)


def select_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of up to `per_class` images of each class (all of a smaller class), drawn without
    replacement by numpy's default_rng(seed) class by class in label order; sorted within a class."""
    if per_class < 1:
        raise ValueError(f"latent.per_class: must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        chosen.append(np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)))
    return np.concatenate(chosen).astype(np.int64)


def _json_number(value: float) -> float | None:
    """NaN (an empty group) is written as null, which strict JSON readers accept."""
    return None if math.isnan(value) else value


def run_latent(checkpoint: str | os.PathLike, split_npz: str | os.PathLike, reference_npz: str | os.PathLike,
               latent_cfg: LatentConfig,
               out_npz: str | os.PathLike, out_json: str | os.PathLike) -> None:
    """The latent stage for one run: bottleneck features of latent_cfg.per_class balanced images a class,
    clean and noised (LATENT_INPUTS), their separation scores (`silhouette*`, `knn_purity*`, and
    `noised_*` for the noised inputs; groups from the split's class counts) and the t-SNE of
    latent_cfg.tsne_input. Writes out_npz (features (N, C_mid), t-SNE (N, 2), labels, indices into the
    balanced set, class names, counts and groups, meta) and out_json (the scores, NaN as null, with the
    settings that made them); coral.figures.tsne_run_figure draws a run from the two."""
    model, diffusion, run_cfg = load_model(checkpoint)
    data = load_reference(reference_npz)
    split = load_split(split_npz, with_images=False)
    if list(split.class_names) != list(data.class_names):
        raise ValueError(f"{split_npz}: class names {split.class_names} do not match the dataset "
                         f"reference set {reference_npz}: {data.class_names}")
    groups = class_groups(split.class_counts)

    balanced_labels = data.labels.numpy()
    indices = select_per_class(balanced_labels, latent_cfg.per_class, latent_cfg.seed)
    labels = balanced_labels[indices]
    features = {inputs: bottleneck_features(model, diffusion, data.images[indices], labels, latent_cfg.t_fraction,
                                            latent_cfg.seed, latent_cfg.batch_size, inputs) for inputs in LATENT_INPUTS}
    scores = separation_scores(features["clean"], labels, groups, latent_cfg.knn_k)
    scores.update({f"noised_{name}": value for name, value in
                   separation_scores(features["noised"], labels, groups, latent_cfg.knn_k).items()})
    features = features[latent_cfg.tsne_input]
    tsne = tsne_embedding(features, latent_cfg.seed, latent_cfg.perplexity)
    t_value = int(latent_cfg.t_fraction * diffusion.T)
    run = run_cfg["run"]

    meta = {"run": run, "checkpoint": str(checkpoint), "t": t_value, "metric": METRIC, "latent_cfg": latent_cfg.as_dict()}
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features, tsne=tsne, labels=labels, indices=indices,
                     class_names=np.array(split.class_names), class_counts=np.asarray(split.class_counts),
                     groups=np.array(groups), meta=np.array(json.dumps(meta)))
    write_json(out_json, {"run": run, **{k: _json_number(v) for k, v in scores.items()},
                          "metric": METRIC, "knn_k": latent_cfg.knn_k, "t": t_value,
                          "t_fraction": latent_cfg.t_fraction, "tsne_input": latent_cfg.tsne_input,
                          "num_points": len(labels),
                          "num_classes": len(split.class_names), "checkpoint": str(checkpoint),
                          "latent_cfg": latent_cfg.as_dict(), "provenance": provenance()})
    lineage.record([out_npz, out_json], "latent", [checkpoint, split_npz, reference_npz],
                   {"run": run, "latent": latent_cfg.as_dict()}, identity.latent(latent_cfg.as_dict()))
