"""Datasets, the long-tail split of SPEC section 1, and class groups.

Every dataset is returned balanced, as one uint8 tensor (N, C, H, W) at the preset's
resolution plus int64 labels; the long-tailed training set is a list of indices into it.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import importlib.resources
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from coral import lineage
from coral.io import DatasetError, atomic_path
from coral.sources import CIFAR_ARCHIVES, dataset_files, missing_dataset_message

ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


@dataclass
class LabeledImages:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other global, so reading data never runs code."""

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if name == "_reconstruct" and module in {"numpy.core.multiarray", "numpy._core.multiarray"}:
            return np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own array reconstructor
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles spell bytes
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _load_numpy_pickle_gz(resource) -> np.ndarray:
    with resource.open("rb") as raw, gzip.open(raw) as f:
        return _NumpyOnlyUnpickler(io.BytesIO(f.read())).load()


def _animals_files() -> list[Path]:
    folder = importlib.resources.files("animal_shape_mnist") / "data" / "Animal Shape"
    return [Path(str(folder / name)) for name in ("animal_data_version_3.gz", "animal_label_version_3.gz")]


def _load_animals(data_cfg: dict) -> LabeledImages:
    """The Animal-Shape set shipped inside `animal-shape-mnist==0.39` (10 x 1000, 28x28 gray)."""
    try:
        folder = importlib.resources.files("animal_shape_mnist") / "data" / "Animal Shape"
    except ModuleNotFoundError as err:
        raise DatasetError("dataset 'animals' needs the package animal-shape-mnist==0.39: "
                           "pip install 'animal-shape-mnist==0.39'") from err
    images = _load_numpy_pickle_gz(folder / "animal_data_version_3.gz")
    labels = _load_numpy_pickle_gz(folder / "animal_label_version_3.gz")
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise DatasetError(f"{folder}: expected 10000 images of 28x28 and 10000 labels, "
                           f"found {images.shape} and {labels.shape}")
    return LabeledImages(torch.from_numpy(images.copy()).unsqueeze(1),
                         torch.from_numpy(labels.astype(np.int64)), list(ANIMAL_CLASSES))


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise DatasetError(f"{path}: not a CIFAR batch file in torchvision's format ({err})") from None


def _load_cifar(data_cfg: dict) -> LabeledImages:
    """CIFAR-10/100 training sets from torchvision's on-disk layout under data.data_root."""
    name = data_cfg["dataset"]
    if data_cfg["download"] and missing_dataset_message({**data_cfg, "download": False}):
        from torchvision.datasets.utils import download_and_extract_archive
        url, md5 = CIFAR_ARCHIVES[name]
        download_and_extract_archive(url, data_cfg["data_root"], md5=md5)
    *batches, meta_file = dataset_files(data_cfg)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    images, labels = [], []
    for path in batches:
        batch = _read_cifar_pickle(path)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    meta = _read_cifar_pickle(meta_file)
    class_names = list(meta["label_names" if name == "cifar10" else "fine_label_names"])
    return LabeledImages(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                         class_names)


DATASETS = {"animals": _load_animals, "cifar10": _load_cifar, "cifar100": _load_cifar}


def source_files(data_cfg: dict) -> list[Path]:
    """The files a dataset is read from, for lineage records."""
    return _animals_files() if data_cfg["dataset"] == "animals" else dataset_files(data_cfg)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W) images to size x size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def load_balanced(data_cfg: dict) -> LabeledImages:
    """The full balanced dataset named by data_cfg['dataset'], resized to data_cfg['image_size']."""
    name = data_cfg["dataset"]
    if name not in DATASETS:
        raise DatasetError(f"data.dataset: unknown dataset {name!r}; allowed: {sorted(DATASETS)}")
    data = DATASETS[name](data_cfg)
    return LabeledImages(resize_uint8(data.images, data_cfg["image_size"]), data.labels, data.class_names)


def long_tail_counts(n_max: int, rho: float, num_classes: int) -> list[int]:
    """n_i = int(n_max * rho ** (i / (C - 1))): class 0 the head (SPEC section 1)."""
    return [int(n_max * rho ** (i / (num_classes - 1))) for i in range(num_classes)]


def long_tail_indices(labels: np.ndarray, rho: float, seed: int) -> np.ndarray:
    """Indices of the long-tailed subset of a balanced label array, as SPEC section 1 selects them."""
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1
    n_max = len(labels) // num_classes
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n in enumerate(long_tail_counts(n_max, rho, num_classes)):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.concatenate(chosen).astype(np.int64)


def class_groups(class_counts) -> list[str]:
    """'head' / 'medium' / 'tail' per class: thirds by training-set frequency (ties keep label order)."""
    counts = np.asarray(class_counts)
    order = np.argsort(-counts, kind="stable")
    groups = [""] * len(counts)
    for name, members in zip(("head", "medium", "tail"), np.array_split(order, 3)):
        for c in members:
            groups[int(c)] = name
    return groups


def write_split(data_cfg: dict, rho: float, out_split: str | Path, out_counts: str | Path) -> None:
    """Write the long-tailed split (indices into the balanced set) and its class counts."""
    data = load_balanced(data_cfg)
    labels = data.labels.numpy()
    indices = long_tail_indices(labels, rho, data_cfg["subsample_seed"])
    counts = np.bincount(labels[indices], minlength=data.num_classes)
    with atomic_path(out_split) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, indices=indices, labels=labels[indices], class_counts=counts,
                     class_names=np.array(data.class_names),
                     meta=np.array(json.dumps({"dataset": data_cfg["dataset"], "rho": rho,
                                               "subsample_seed": data_cfg["subsample_seed"]})))
    groups = class_groups(counts)
    with atomic_path(out_counts) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "class_name", "count", "group"])
            for c, (name, n) in enumerate(zip(data.class_names, counts)):
                writer.writerow([c, name, int(n), groups[c]])
    lineage.record([out_split, out_counts], "subsample", source_files(data_cfg), {"data": data_cfg, "rho": rho})


@dataclass
class Split:
    indices: np.ndarray
    labels: np.ndarray
    class_counts: np.ndarray
    class_names: list[str]


def load_split(path: str | Path) -> Split:
    """A split written by `write_split`; a missing or damaged file raises DatasetError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return Split(z["indices"], z["labels"], z["class_counts"], [str(s) for s in z["class_names"]])
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such split file; write it with `python -m coral subsample`") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: not a split file written by `coral subsample` ({err}); "
                           "delete it and write it again") from None
