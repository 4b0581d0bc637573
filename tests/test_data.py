"""Long-tailed split against docs/method.md §1's check values; the bundled dataset loads offline."""
import csv

import numpy as np
import pytest
import torch

from coral.data import load_dataset, load_reference, load_split, resize_uint8, write_reference, write_split
from coral.longtail import class_groups, long_tail_indices

CIFAR10_RHO_001 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR10_RHO_0001 = [5000, 2320, 1077, 500, 232, 107, 50, 23, 10, 5]


@pytest.mark.parametrize("rho,expected,total", [(0.01, CIFAR10_RHO_001, 12406), (0.001, CIFAR10_RHO_0001, 9324)])
def test_cifar10_shaped_counts(rho, expected, total):
    labels = np.tile(np.arange(10), 5000)  # CIFAR10-shaped: 10 x 5000, interleaved like the real file
    counts = np.bincount(labels[long_tail_indices(labels, rho, seed=0)], minlength=10)
    assert counts.tolist() == expected and counts.sum() == total


def test_cifar100_shaped_counts():
    labels = np.tile(np.arange(100), 500)
    counts = np.bincount(labels[long_tail_indices(labels, 0.01, seed=0)], minlength=100)
    assert counts.sum() == 10847
    assert counts[:5].tolist() == [500, 477, 455, 434, 415] and counts[-4:].tolist() == [5, 5, 5, 5]


def test_selection_is_seeded_shuffle_per_class():
    labels = np.repeat(np.arange(3), 10)
    chosen = long_tail_indices(labels, 0.1, seed=0)
    rng = np.random.RandomState(0)  # the procedure of docs/method.md §1, written out
    expected = []
    for c, n in enumerate([10, 3, 1]):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        expected.extend(idx[:n])
    assert chosen.tolist() == expected
    assert not np.array_equal(chosen, long_tail_indices(labels, 0.1, seed=1))


def test_diagnosis_training_sets_from_the_cifar10_lt_counts():
    """Same total (12406 = 10 x 1240 + 6: the remainder on the first classes) and the tail's count (50)."""
    labels = np.tile(np.arange(10), 5000)
    total = np.bincount(labels[long_tail_indices(labels, 0.01, 0, "balanced_total")], minlength=10)
    assert total.tolist() == [1241] * 6 + [1240] * 4 and total.sum() == 12406
    scarce = long_tail_indices(labels, 0.01, 0, "balanced_scarce")
    assert np.bincount(labels[scarce], minlength=10).tolist() == [50] * 10
    # every class's images are the first of the same seeded shuffle: the scarce set lies inside the long-tailed one
    assert set(scarce) <= set(long_tail_indices(labels, 0.01, 0))
    with pytest.raises(ValueError, match="data.training_set: 'balanced'; allowed: long_tailed, balanced_total"):
        long_tail_indices(labels, 0.01, 0, "balanced")


def test_class_groups_thirds():
    assert class_groups([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]) == \
        ["head"] * 4 + ["medium"] * 3 + ["tail"] * 3
    assert class_groups([1, 3, 2]) == ["tail", "head", "medium"]


def test_animals_bundled_dataset():
    data = load_dataset({"dataset": "animals", "image_size": 28}, "train")
    assert data.images.shape == (10000, 1, 28, 28) and str(data.images.dtype) == "torch.uint8"
    assert np.bincount(data.labels.numpy()).tolist() == [1000] * 10
    assert data.class_names[0] == "bear" and data.class_names[-1] == "zebra"
    assert 0 < data.images.float().mean() < 255


def test_resize_preserves_constant_images():
    import torch
    images = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    assert resize_uint8(images, 16).unique().tolist() == [200]


def test_write_split_files(tmp_path):
    cfg = {"dataset": "animals", "image_size": 8, "subsample_seed": 0, "training_set": "long_tailed"}
    write_split(cfg, 0.01, tmp_path / "split.npz", tmp_path / "counts.csv")
    split = load_split(tmp_path / "split.npz")
    expected = [int(1000 * 0.01 ** (i / 9)) for i in range(10)]  # 1000, 599, ..., 10
    assert split.class_counts.tolist() == expected and expected[-1] == 10
    assert np.bincount(split.labels).tolist() == expected
    rows = list(csv.DictReader(open(tmp_path / "counts.csv")))
    assert [int(r["count"]) for r in rows] == expected and rows[-1]["group"] == "tail"
    balanced = load_dataset(cfg, "train")  # the split stores the selected images themselves
    assert split.images.shape == (sum(expected), 1, 8, 8)
    assert torch.equal(split.images, balanced.images[torch.from_numpy(split.indices)])


def test_write_reference_is_the_balanced_set(tmp_path):
    cfg = {"dataset": "animals", "image_size": 8, "subsample_seed": 0}
    write_reference(cfg, tmp_path / "reference.npz")
    reference = load_reference(tmp_path / "reference.npz")
    assert np.bincount(reference.labels.numpy()).tolist() == [1000] * 10
    assert torch.equal(reference.images, load_dataset(cfg, "reference").images)


def test_damaged_split_file_named(tmp_path):
    (tmp_path / "split.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="split.npz: not a file written by `coral subsample`"):
        load_split(tmp_path / "split.npz")


def test_unknown_dataset_named():
    with pytest.raises(ValueError, match="'cifar1O'"):
        load_dataset({"dataset": "cifar1O", "image_size": 8}, "train")
