"""Stand-ins for the paper's datasets in their real on-disk formats, small enough for a CPU test.

Each writer puts files where coral.sources looks for the real dataset under a data root, named as
the real files, so the same code reads them as it would read the real ones. Images are a class colour
plus seeded noise; nothing is downloaded. `python tests/standins.py DIR` writes all of them to DIR.

- CIFAR-100: torchvision's cifar-100-python/{train,test,meta}, protocol-2 pickles of dicts with a
  uint8 (N, 3072) 'data' array (1024 red, 1024 green, 1024 blue values per row, row-major).
- CelebA: celeba/list_attr_celeba.txt (count, the 40 attribute names, then one line of 1/-1 per
  image), list_eval_partition.txt (image, 0/1/2) and img_align_celeba/000001.jpg ... at 178x218.
- ImageNet-LT: imagenet_lt/ImageNet_LT_{train,test}.txt ('train/nXXXXXXXX/nXXXXXXXX_K.JPEG label',
  'val/nXXXXXXXX/ILSVRC2012_val_000KKKKK.JPEG label') and the JPEGs under imagenet/{train,val}/.
- Inception: torch-fidelity's FeatureExtractorInceptionV3 state_dict with seeded random weights, at
  the file name torch-fidelity downloads to (evaluate.inception_weights_path).
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"

# line 2 of the real list_attr_celeba.txt: the hair attributes are scattered among the 40
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
CELEBA5_HAIR = ["Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair"]  # CelebA-5 label order
CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba


def _class_colour(c: int, num_classes: int) -> np.ndarray:
    """A colour per class, spread over the RGB cube."""
    k = int(np.ceil(num_classes ** (1 / 3)))
    return np.array([c % k, c // k % k, c // (k * k) % k], dtype=float) * 255 / max(k - 1, 1)


def _pixels(rng: np.random.Generator, colour: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (height, width, 3): the colour plus Gaussian noise."""
    noise = rng.normal(0, 40, (height, width, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90)


# ---------------------------------------------------------------- CIFAR-100


def write_cifar100(root: Path, per_class: int = 100, test_per_class: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """torchvision's cifar-100-python/ with `per_class` training images per class (real: 500) in shuffled
    order, like the real file. Returns the train file's 'data' (N, 3072) and 'fine_labels' (N,)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, n in (("train", per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(100), n))
        images = np.stack([_pixels(rng, _class_colour(c, 100), 32, 32) for c in labels])
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # HWC -> the R|G|B planes of a row
        batch = {"filenames": [f"standin_s_{i:06d}.png" for i in range(len(labels))],
                 "batch_label": f"{part}ing batch 1 of 1", "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist(), "data": data}
        (folder / part).write_bytes(pickle.dumps(batch, protocol=2))
        if part == "train":
            written = {"data": data, "fine_labels": labels}
    meta = {"fine_label_names": [f"fine{c:03d}" for c in range(100)],
            "coarse_label_names": [f"coarse{c:02d}" for c in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


# ---------------------------------------------------------------- CelebA


def celeba_rows(train_counts: tuple[int, ...]) -> list[tuple[list[str], int]]:
    """(attributes set to 1, partition) per image: train_counts[c] train images with only CelebA-5 class c's
    hair attribute, and images CelebA-5 leaves out (two or no hair attributes, valid and test partitions)."""
    rows = [([CELEBA5_HAIR[c]], 0) for c, n in enumerate(train_counts) for _ in range(n)]
    rows += [(["Black_Hair", "Brown_Hair"], 0), ([], 0), (["Blond_Hair"], 1), (["Gray_Hair"], 2)]
    order = np.random.default_rng(0).permutation(len(rows))  # classes interleaved in file order
    return [rows[i] for i in order]


def write_celeba(root: Path, train_counts: tuple[int, ...] = (6, 8, 2, 10, 3), seed: int = 0) -> list[int | None]:
    """torchvision's celeba/ folder. Returns the CelebA-5 label of each image in file order (None: left out)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "celeba"
    rows = celeba_rows(train_counts)
    names = [f"{i + 1:06d}.jpg" for i in range(len(rows))]
    attr_lines = [str(len(rows)), " ".join(CELEBA_ATTRIBUTES) + " "]
    labels = []
    for i, (name, (on, partition)) in enumerate(zip(names, rows)):
        on = set(on) | ({"Smiling", "Young"} if i % 3 else {"Male"})  # other attributes must not matter
        attr_lines.append(name + " " + " ".join(f"{1 if a in on else -1:2d}" for a in CELEBA_ATTRIBUTES))
        hair = [CELEBA5_HAIR.index(a) for a in on if a in CELEBA5_HAIR]
        label = hair[0] if len(hair) == 1 and partition == 0 else None
        labels.append(label)
        colour = _class_colour(label if label is not None else 5, 6)
        _save_jpeg(folder / "img_align_celeba" / name, _pixels(rng, colour, CELEBA_SIZE[1], CELEBA_SIZE[0]))
    (folder / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {partition}\n" for name, (_, partition) in zip(names, rows)))
    return labels


# ---------------------------------------------------------------- ImageNet-LT


def imagenet_synsets(num_classes: int = 1000) -> list[str]:
    """Synset-like folder names in sorted order, as ImageNet-LT's labels follow the sorted synsets."""
    return [f"n{1440764 + 9973 * c:08d}" for c in range(num_classes)]


def imagenet_lt_train_counts(num_classes: int = 1000, n_max: int = 5, n_min: int = 1, seed: int = 0) -> np.ndarray:
    """Per-class training counts from n_max down to n_min along a power law (real: 1280 down to 5), given to
    the classes in a seeded random order: the head is not class 0."""
    ranked = np.round(n_max * (n_min / n_max) ** (np.arange(num_classes) / (num_classes - 1))).astype(int)
    return ranked[np.random.default_rng(seed).permutation(num_classes)]


# image shapes (width, height) cycled through: landscape, portrait and square, as ImageNet's vary
_IMAGENET_SHAPES = [(40, 30), (30, 40), (32, 32), (44, 33)]


def write_imagenet_lt(root: Path, train_counts=None, test_per_class: int = 2,
                      seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """imagenet_lt/ImageNet_LT_{train,test}.txt and their JPEGs under imagenet/; test_per_class images per
    class (real: 50) from val/. Returns each list's (path, label) lines in file order."""
    rng = np.random.default_rng(seed)
    train_counts = imagenet_lt_train_counts() if train_counts is None else np.asarray(train_counts)
    num_classes = len(train_counts)
    synsets = imagenet_synsets(num_classes)
    root = Path(root)
    lines: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    val_id = 0
    for label, synset in enumerate(synsets):
        for k in range(train_counts[label]):
            lines["train"].append((f"train/{synset}/{synset}_{1000 + 7 * k}.JPEG", label))
        for _ in range(test_per_class):
            val_id += 1
            lines["test"].append((f"val/{synset}/ILSVRC2012_val_{val_id:08d}.JPEG", label))
    for i, (path, label) in enumerate(lines["train"] + lines["test"]):
        width, height = _IMAGENET_SHAPES[i % len(_IMAGENET_SHAPES)]
        _save_jpeg(root / "imagenet" / path, _pixels(rng, _class_colour(label, num_classes), height, width))
    (root / "imagenet_lt").mkdir(parents=True, exist_ok=True)
    for part, name in (("train", "ImageNet_LT_train.txt"), ("test", "ImageNet_LT_test.txt")):
        order = rng.permutation(len(lines[part]))  # the real lists are not grouped by class
        lines[part] = [lines[part][i] for i in order]
        (root / "imagenet_lt" / name).write_text("".join(f"{path} {label}\n" for path, label in lines[part]))
    return lines


# ---------------------------------------------------------------- Inception weights


def write_inception_weights(path: Path, seed: int = 0) -> Path:
    """A weights file for torch-fidelity's `feature_extractor_weights_path`: the state_dict of its
    FeatureExtractorInceptionV3 (the architecture of the 2015-12-05 TensorFlow graph), here with random
    He-normal convolutions, so features keep unit scale through the 94 conv-BN-ReLU layers, and default
    BatchNorm statistics. torch-fidelity loads it with a strict load_state_dict."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the fresh modules; the constructor would load the file being written

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, path)  # read (and ignored) by the constructor below, then overwritten
    model = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
        model.fc.weight.normal_(0, 2048 ** -0.5, generator=generator)
        model.fc.bias.zero_()
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def touch_paper_layout(root: Path) -> None:
    """Empty files at every path the paper preset checks before planning: enough for a dry run, which
    reads no data (the paper's CIFAR-10 included)."""
    root = Path(root)
    for folder, files in [("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]),
                          ("cifar-100-python", ["train", "meta"]),
                          ("celeba", ["list_attr_celeba.txt", "list_eval_partition.txt"]),
                          ("imagenet_lt", ["ImageNet_LT_train.txt", "ImageNet_LT_test.txt"])]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            (root / folder / name).touch()
    (root / "celeba" / "img_align_celeba").mkdir(exist_ok=True)
    (root / "imagenet").mkdir(exist_ok=True)
    (root / INCEPTION_FILE).touch()


def write_all(root: Path) -> None:
    """Every stand-in under one data root, the Inception weights included."""
    root = Path(root)
    write_cifar100(root)
    write_celeba(root)
    write_imagenet_lt(root)
    write_inception_weights(root / INCEPTION_FILE)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/standins.py DATA_ROOT")
    write_all(Path(sys.argv[1]))
