"""Datasets, the long-tail split of docs/method.md §1, the balanced reference set, and class groups.

Only `write_split` and `write_reference` read a raw dataset; they store uint8 images (N, C, H, W)
at the preset's resolution with int64 labels, and every later stage reads those two files.
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

from coral import identity, lineage
from coral.io import DatasetError, atomic_path, waiting_lock
from coral.longtail import class_groups, long_tail_indices
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
    if data_cfg["download"]:
        # subsample and reference read the same dataset, often at once: one downloads, the other waits for it
        with waiting_lock(Path(data_cfg["data_root"]) / f".{name}.download.lock"):
            if missing_dataset_message({**data_cfg, "download": False}):
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


def _load_photos(data_cfg: dict, part: str) -> LabeledImages:
    from coral import photo_datasets
    loader = photo_datasets.load_celeba5 if data_cfg["dataset"] == "celeba5" else photo_datasets.load_imagenet_lt
    return LabeledImages(*loader(data_cfg, part))


def _balanced(loader):
    """A balanced source: the same images serve as training pool and evaluation reference."""
    def load(data_cfg: dict, part: str) -> LabeledImages:
        data = loader(data_cfg)
        return LabeledImages(resize_uint8(data.images, data_cfg["image_size"]), data.labels, data.class_names)
    return load


# name -> load(data_cfg, part): part "train" is the training pool (balanced sources are then made
# long-tailed by rho), part "reference" the balanced set every evaluation compares against.
DATASETS = {"animals": _balanced(_load_animals), "cifar10": _balanced(_load_cifar),
            "cifar100": _balanced(_load_cifar), "celeba5": _load_photos, "imagenet_lt": _load_photos}


def source_files(data_cfg: dict) -> list[Path]:
    """The files a dataset is read from, for lineage records (image folders are named by their list files)."""
    if data_cfg["dataset"] == "animals":
        return _animals_files()
    return [path for path in dataset_files(data_cfg) if not path.is_dir()]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W) images to size x size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def load_dataset(data_cfg: dict, part: str) -> LabeledImages:
    """Part "train" or "reference" of the dataset named by data_cfg['dataset'], at data_cfg['image_size']."""
    name = data_cfg["dataset"]
    if name not in DATASETS:
        raise DatasetError(f"data.dataset: unknown dataset {name!r}; allowed: {sorted(DATASETS)}")
    missing = missing_dataset_message(data_cfg)
    if missing:
        raise DatasetError(missing)
    return DATASETS[name](data_cfg, part)


def _save_npz(path: str | Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def write_split(data_cfg: dict, rho: float | None, out_split: str | Path, out_counts: str | Path) -> None:
    """Write the training set (its uint8 images, labels, indices into the training pool) and its class
    counts: the long-tailed set of rho (rho None keeps a naturally long-tailed pool as it is), or, with
    data.training_set, a balanced set of the diagnosis drawn from a balanced pool (training_set_counts
    of the long-tailed counts; each class's images are the first of the same seeded shuffle, so the
    balanced_scarce set lies inside the long-tailed one)."""
    data_cfg = identity.plain(data_cfg)
    data = load_dataset(data_cfg, "train")
    labels = data.labels.numpy()
    training_set = data_cfg["training_set"]
    if rho is None:
        if training_set != "long_tailed":
            raise ValueError(f"data.training_set: {training_set!r} needs a balanced pool; {data_cfg['dataset']} is "
                             "long-tailed as published (allowed: long_tailed)")
        indices = np.arange(len(labels), dtype=np.int64)
    else:
        indices = long_tail_indices(labels, rho, data_cfg["subsample_seed"], training_set)
    counts = np.bincount(labels[indices], minlength=data.num_classes)
    _save_npz(out_split, images=data.images.numpy()[indices], indices=indices, labels=labels[indices],
              class_counts=counts, class_names=np.array(data.class_names),
              meta=np.array(json.dumps({"dataset": data_cfg["dataset"], "rho": rho, "training_set": training_set,
                                        "subsample_seed": data_cfg["subsample_seed"]})))
    groups = class_groups(counts)
    with atomic_path(out_counts) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "class_name", "count", "group"])
            for c, (name, n) in enumerate(zip(data.class_names, counts)):
                writer.writerow([c, name, int(n), groups[c]])
    lineage.record([out_split, out_counts], "subsample", source_files(data_cfg), {"data": data_cfg, "rho": rho},
                   identity.split({**data_cfg, "rho": rho}))


def write_reference(data_cfg: dict, out_npz: str | Path) -> None:
    """Write the balanced reference set of a dataset: what every evaluation compares against."""
    data_cfg = identity.plain(data_cfg)
    data = load_dataset(data_cfg, "reference")
    _save_npz(out_npz, images=data.images.numpy(), labels=data.labels.numpy(),
              class_names=np.array(data.class_names))
    lineage.record([out_npz], "reference", source_files(data_cfg), {"data": data_cfg}, identity.reference(data_cfg))


@dataclass
class Split:
    images: torch.Tensor | None  # uint8 (N, C, H, W), the long-tailed training set (None if not read)
    indices: np.ndarray
    labels: np.ndarray
    class_counts: np.ndarray
    class_names: list[str]


def _open_npz(path: str | Path, keys: list[str], writer: str) -> dict[str, np.ndarray]:
    """The arrays `keys` of an npz file; a missing or unreadable file raises DatasetError naming it, one
    that changed since `coral writer` made it lineage.DamagedArtifact."""
    lineage.verify(path, f"the {writer} file", writer)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in keys}
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file; write it with `python -m coral {writer}`") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: not a file written by `coral {writer}` ({err}); "
                           "delete it and write it again") from None


def load_split(path: str | Path, with_images: bool = True) -> Split:
    """A split written by `write_split`; with_images=False skips reading the images."""
    keys = ["indices", "labels", "class_counts", "class_names"] + (["images"] if with_images else [])
    z = _open_npz(path, keys, "subsample")
    images = torch.from_numpy(z["images"]) if with_images else None
    return Split(images, z["indices"], z["labels"], z["class_counts"], [str(s) for s in z["class_names"]])


def load_reference(path: str | Path) -> LabeledImages:
    """A reference set written by `write_reference`."""
    z = _open_npz(path, ["images", "labels", "class_names"], "reference")
    return LabeledImages(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]),
                         [str(s) for s in z["class_names"]])
