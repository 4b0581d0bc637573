"""The long tail of docs/method.md §1: per-class counts, the seeded choice of each class's images, the
training sets of the imbalance-vs-scarcity diagnosis, and head/medium/tail groups. numpy only."""
from __future__ import annotations

import numpy as np


def long_tail_counts(n_max: int, rho: float, num_classes: int) -> list[int]:
    """n_i = int(n_max * rho ** (i / (C - 1))): class 0 the head (docs/method.md §1)."""
    return [int(n_max * rho ** (i / (num_classes - 1))) for i in range(num_classes)]


def class_subset_indices(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """counts[c] images of each class c: per class in label order, one RandomState(seed) shuffles the
    class's indices and keeps the first counts[c] (docs/method.md §1). int64 indices, grouped by class."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.concatenate(chosen).astype(np.int64)


# The training sets of the imbalance-vs-scarcity diagnosis (docs/method.md §1): the long-tailed set, a
# balanced set of the same total size, and a balanced set with every class at the tail's count.
TRAINING_SETS = ("long_tailed", "balanced_total", "balanced_scarce")


def training_set_counts(long_tailed: list[int], training_set: str) -> list[int]:
    """Per-class counts of a training set from the long-tailed counts: as they are (long_tailed), their
    total spread evenly with the remainder on the first classes (balanced_total), or every class at the
    smallest count (balanced_scarce)."""
    num_classes, total = len(long_tailed), int(sum(long_tailed))
    if training_set == "long_tailed":
        return [int(n) for n in long_tailed]
    if training_set == "balanced_total":
        base, extra = divmod(total, num_classes)
        return [base + 1] * extra + [base] * (num_classes - extra)
    if training_set == "balanced_scarce":
        return [int(min(long_tailed))] * num_classes
    raise ValueError(f"data.training_set: {training_set!r}; allowed: {', '.join(TRAINING_SETS)}")


def long_tail_indices(labels: np.ndarray, rho: float, seed: int, training_set: str = "long_tailed") -> np.ndarray:
    """Indices of the long-tailed subset of a balanced label array (docs/method.md §1), or of a
    diagnosis training set made from its counts (training_set_counts)."""
    num_classes = int(np.max(labels)) + 1
    counts = long_tail_counts(len(labels) // num_classes, rho, num_classes)
    return class_subset_indices(labels, training_set_counts(counts, training_set), seed)


def class_groups(class_counts) -> list[str]:
    """'head' / 'medium' / 'tail' per class: thirds by training-set frequency (ties keep label order)."""
    counts = np.asarray(class_counts)
    order = np.argsort(-counts, kind="stable")
    groups = [""] * len(counts)
    for name, members in zip(("head", "medium", "tail"), np.array_split(order, 3)):
        for c in members:
            groups[int(c)] = name
    return groups
