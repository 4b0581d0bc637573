"""CelebA-5 and ImageNet-LT read from their real on-disk layouts (coral.sources), cropped and resized.

Both loaders return (images uint8 (N, 3, S, S), labels int64 (N,), class_names) with S = data_cfg["image_size"].
part "train" is the (naturally long-tailed) training set, part "reference" the class-balanced set that
evaluation compares against.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from coral.longtail import class_subset_indices
from coral.io import DatasetError
from coral.progress import Progress
from coral.sources import CELEBA_FILES, IMAGENET_FOLDER, IMAGENET_LT_FILES

PARTS = ("train", "reference")

CELEBA5_CLASSES = ["blond", "black", "bald", "brown", "gray"]  # label order
CELEBA5_ATTRIBUTES = ["Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair"]
# The usual face crop behind 64x64 CelebA: the 140x140 centre of the 178x218 aligned image keeps
# the face and hair and drops most of the background.
CELEBA_CROP = 140
CELEBA_TRAIN_PARTITION = "0"  # list_eval_partition.txt: 0 train, 1 valid, 2 test

# Bicubic: PIL widens the kernel by the downscale factor (antialiased) and it stays sharper than a box filter.
RESAMPLE = Image.BICUBIC
BATCH_SIZE = 256
MIN_IMAGES_FOR_WORKERS = 256  # below this, worker start-up costs more than it saves


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split tokens) of each non-blank line; a missing or binary file raises DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                tokens = line.split()
                if tokens:
                    yield n, tokens
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read it as a text list file ({err})") from None


# ---------------------------------------------------------------- decoding


def decode_image(path: str, size: int, crop: int | None) -> torch.Tensor:
    """uint8 (3, size, size): RGB, centre crop of `crop` pixels (None: the shorter side), antialiased resize."""
    with Image.open(path) as img:
        if crop is None:
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size. It keeps the aspect
            # ratio up to rounding, and the crop below is taken from the drafted size.
            img.draft("RGB", (size, size))
            crop = min(img.size)
        w, h = img.size
        if min(w, h) < crop:
            raise ValueError(f"image is {w}x{h}, smaller than the {crop}x{crop} centre crop")
        left, top = (w - crop) // 2, (h - crop) // 2
        out = img.convert("RGB").crop((left, top, left + crop, top + crop)).resize((size, size), RESAMPLE)
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).contiguous()


class _ImageFiles(Dataset):
    """Image files decoded by `decode_image`; a failure comes back as a message for the main process to raise."""

    def __init__(self, paths: list[str], size: int, crop: int | None):
        self.paths, self.size, self.crop = paths, size, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path = self.paths[i]
        try:
            return decode_image(path, self.size, self.crop), ""
        except FileNotFoundError:
            message = f"{path}: no such image file"
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            message = f"{path}: cannot use this image ({err}); expected a readable JPEG"
        return torch.zeros(3, self.size, self.size, dtype=torch.uint8), message


def decode_images(paths: list[Path], size: int, crop: int | None, desc: str) -> torch.Tensor:
    """uint8 (N, 3, size, size), decoded by one worker process per thread of the job (torch's thread
    count, which a rule's `threads` set through coral.jobs.setup_job), with a progress bar on stderr."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: no such image file ({len(missing)} of the {len(paths)} listed "
                           "images are missing)")
    threads = torch.get_num_threads()
    workers = threads if threads > 1 and len(paths) >= MIN_IMAGES_FOR_WORKERS else 0
    loader = DataLoader(_ImageFiles([str(p) for p in paths], size, crop), batch_size=BATCH_SIZE,
                        num_workers=workers)
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    start = 0
    with Progress(total=len(paths), desc=desc, unit="img") as bar:
        for batch, errors in loader:
            error = next((e for e in errors if e), None)
            if error:
                raise DatasetError(error)
            images[start:start + len(batch)] = batch
            start += len(batch)
            bar.update(len(batch))
    return images


# ---------------------------------------------------------------- CelebA-5


def _celeba5_train(folder: Path) -> tuple[list[str], np.ndarray]:
    """Image names and labels (N,) of the train-partition images with exactly one of the five hair attributes."""
    attr_file, part_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    lines = _lines(attr_file)
    header = [next(lines, None), next(lines, None)]
    if header[1] is None:
        raise DatasetError(f"{attr_file}: expected the number of images on line 1 and the attribute names "
                           "on line 2, found fewer lines")
    (n1, count), (n2, names) = header
    if len(count) != 1 or not count[0].isdigit():
        raise DatasetError(f"{attr_file}:{n1}: expected the number of images, found {' '.join(count)!r}")
    absent = [a for a in CELEBA5_ATTRIBUTES if a not in names]
    if absent:
        raise DatasetError(f"{attr_file}:{n2}: expected the attribute names, including {absent}; "
                           f"found {' '.join(names)[:100]!r}")
    columns = [names.index(a) + 1 for a in CELEBA5_ATTRIBUTES]  # +1: the image name comes first

    chosen, labels, total = [], [], 0
    for n, tokens in lines:
        total += 1
        if len(tokens) != len(names) + 1 or not set(tokens[1:]) <= {"1", "-1"}:
            raise DatasetError(f"{attr_file}:{n}: expected an image name and {len(names)} values of 1 or -1, "
                               f"found {' '.join(tokens)[:100]!r}")
        hair = [c for c, col in enumerate(columns) if tokens[col] == "1"]
        if len(hair) == 1:
            chosen.append(tokens[0])
            labels.append(hair[0])
    if total != int(count[0]):
        raise DatasetError(f"{attr_file}:{n1}: says {count[0]} images, but {total} image lines follow")

    partition = {}
    for n, tokens in _lines(part_file):
        if len(tokens) != 2 or tokens[1] not in {"0", "1", "2"}:
            raise DatasetError(f"{part_file}:{n}: expected '<image> <0|1|2>', found {' '.join(tokens)[:100]!r}")
        partition[tokens[0]] = tokens[1]
    unlisted = [name for name in chosen if name not in partition]
    if unlisted:
        raise DatasetError(f"{part_file}: no line for {unlisted[0]} ({len(unlisted)} images of {attr_file} "
                           "missing); expected one line per image")
    train = [i for i, name in enumerate(chosen) if partition[name] == CELEBA_TRAIN_PARTITION]
    labels = np.asarray(labels, dtype=np.int64)[train]
    counts = np.bincount(labels, minlength=len(CELEBA5_CLASSES))
    if (counts == 0).any():
        empty = [a for a, k in zip(CELEBA5_ATTRIBUTES, counts) if k == 0]
        raise DatasetError(f"{attr_file}: no train-partition image has {empty} as its only hair attribute; "
                           "expected images of all five CelebA-5 classes")
    return [chosen[i] for i in train], labels


def balanced_indices(labels: np.ndarray, seed: int) -> np.ndarray:
    """The smallest class count of images of every class, chosen as class_subset_indices does."""
    num_classes = int(labels.max()) + 1
    n_min = int(np.bincount(labels, minlength=num_classes).min())
    return class_subset_indices(labels, [n_min] * num_classes, seed)


def load_celeba5(data_cfg: dict, part: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CelebA-5 (train partition, exactly one hair attribute): images uint8 (N, 3, S, S), labels int64 (N,),
    CELEBA5_CLASSES. "train": all of them in file order; "reference": the class-balanced subset."""
    _check_part(part)
    folder = Path(data_cfg["data_root"]) / CELEBA_FILES[0]
    names, labels = _celeba5_train(folder)
    if part == "reference":
        keep = balanced_indices(labels, data_cfg["subsample_seed"])
        names, labels = [names[i] for i in keep], labels[keep]
    paths = [folder / "img_align_celeba" / name for name in names]
    images = decode_images(paths, data_cfg["image_size"], CELEBA_CROP, f"celeba5 {part}")
    return images, torch.from_numpy(labels), list(CELEBA5_CLASSES)


# ---------------------------------------------------------------- ImageNet-LT


def _imagenet_lt_list(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths (relative to the ImageNet folder), labels int64 (N,) and the synset of each label 0..C-1."""
    rel_paths, labels, synset_of, first_line = [], [], {}, {}
    for n, tokens in _lines(path):
        if len(tokens) != 2 or not tokens[1].isdigit() or len(PurePosixPath(tokens[0]).parts) < 2:
            raise DatasetError(f"{path}:{n}: expected '<folder>/<synset>/<image> <label>', "
                               f"found {' '.join(tokens)[:100]!r}")
        label, synset = int(tokens[1]), PurePosixPath(tokens[0]).parts[-2]
        first_line.setdefault(label, n)
        if synset_of.setdefault(label, synset) != synset:
            raise DatasetError(f"{path}:{n}: label {label} is in folder {synset}, but line {first_line[label]} "
                               f"put it in {synset_of[label]}; expected one synset per label")
        rel_paths.append(tokens[0])
        labels.append(label)
    if not labels:
        raise DatasetError(f"{path}: no image lines; expected '<folder>/<synset>/<image> <label>' lines")
    num_classes = max(labels) + 1
    absent = sorted(set(range(num_classes)) - set(synset_of))
    if absent:
        raise DatasetError(f"{path}: labels go up to {num_classes - 1}, but {absent[:5]} never appear; "
                           f"expected every label 0..{num_classes - 1}")
    class_names = [synset_of[c] for c in range(num_classes)]
    label_of = {}
    for c, synset in enumerate(class_names):
        if label_of.setdefault(synset, c) != c:
            raise DatasetError(f"{path}: synset {synset} has labels {label_of[synset]} and {c}; "
                               "expected one label per synset")
    return rel_paths, np.asarray(labels, dtype=np.int64), class_names


def load_imagenet_lt(data_cfg: dict, part: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """ImageNet-LT: images uint8 (N, 3, S, S) (centre square, resized), labels int64 (N,), synset per label.
    "train" reads ImageNet_LT_train.txt, "reference" ImageNet_LT_test.txt (balanced), whose classes must
    match the train list's."""
    _check_part(part)
    root = Path(data_cfg["data_root"])
    folder, (train_name, test_name) = IMAGENET_LT_FILES
    train_list = root / folder / train_name
    rel_paths, labels, class_names = _imagenet_lt_list(train_list)
    if part == "reference":
        test_list = root / folder / test_name
        rel_paths, labels, test_names = _imagenet_lt_list(test_list)
        if test_names != class_names:
            c = next((c for c, (a, b) in enumerate(zip(test_names, class_names)) if a != b), None)
            found = (f"label {c} is synset {test_names[c]}, but {class_names[c]} in {train_list}" if c is not None
                     else f"{len(test_names)} classes, but {len(class_names)} in {train_list}")
            raise DatasetError(f"{test_list}: {found}; expected the train list's classes")
    paths = [root / IMAGENET_FOLDER / p for p in rel_paths]
    images = decode_images(paths, data_cfg["image_size"], None, f"imagenet_lt {part}")
    return images, torch.from_numpy(labels), class_names
