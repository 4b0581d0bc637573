"""Where each dataset lives on disk and what it holds: checked before any job, no torch needed."""
from __future__ import annotations

from pathlib import Path

NUM_CLASSES = {"animals": 10, "cifar10": 10, "cifar100": 100, "celeba5": 5, "imagenet_lt": 1000}
IN_CHANNELS = {"animals": 1, "cifar10": 3, "cifar100": 3, "celeba5": 3, "imagenet_lt": 3}  # grey or RGB

# Balanced sources are made long-tailed by rho (docs/method.md §1); these two are long-tailed as published
# and take no rho.
NATURALLY_LONG_TAILED = {"celeba5", "imagenet_lt"}
# Training images per class of the balanced sources, before long-tailed subsampling.
BALANCED_PER_CLASS = {"animals": 1000, "cifar10": 5000, "cifar100": 500}

# Images of the datasets long-tailed as published, to size jobs before their files are read. CelebA-5:
# upper bounds, CelebA's training partition (its five-hair-colour subset is smaller).
PUBLISHED_IMAGES = {"celeba5": {"train": 162_770, "reference": 162_770},
                    "imagenet_lt": {"train": 115_846, "reference": 50_000}}

# torchvision's on-disk layout under data.data_root
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "meta"]),
}
CIFAR_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
# torchvision's CelebA layout: <data_root>/celeba/{list_attr_celeba.txt, list_eval_partition.txt,
# img_align_celeba/000001.jpg ...}
CELEBA_FILES = ("celeba", ["list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"])
# ImageNet-LT (Liu et al. 2019): the list files under <data_root>/imagenet_lt/, whose paths
# ("train/n01440764/n01440764_10026.JPEG 0") are relative to the ImageNet-2012 folder <data_root>/imagenet/.
IMAGENET_LT_FILES = ("imagenet_lt", ["ImageNet_LT_train.txt", "ImageNet_LT_test.txt"])
IMAGENET_FOLDER = "imagenet"

DOWNLOADABLE = set(CIFAR_FILES)
HOW_TO_GET = {
    "cifar10": "torchvision's cifar-10-batches-py/ folder",
    "cifar100": "torchvision's cifar-100-python/ folder",
    "celeba5": "CelebA's celeba/ folder (list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/)",
    "imagenet_lt": "imagenet_lt/ImageNet_LT_{train,test}.txt and the ImageNet-2012 folder imagenet/ (train/, val/)",
}


def image_count(data_cfg: dict, part: str) -> int:
    """Images of a dataset's training set (part 'train': long-tailed by its rho, where it takes one) or of
    its reference set (part 'reference')."""
    from coral.longtail import long_tail_counts
    dataset = data_cfg["dataset"]
    if dataset in PUBLISHED_IMAGES:
        return PUBLISHED_IMAGES[dataset][part]
    per_class, classes = BALANCED_PER_CLASS[dataset], NUM_CLASSES[dataset]
    if part == "train" and data_cfg.get("rho") is not None:
        return sum(long_tail_counts(per_class, data_cfg["rho"], classes))
    return per_class * classes


def image_bytes(data_cfg: dict) -> int:
    """Bytes of one uint8 image of a dataset at data.image_size."""
    return IN_CHANNELS[data_cfg["dataset"]] * data_cfg["image_size"] ** 2


def dataset_files(data_cfg: dict) -> list[Path]:
    """The files and folders a disk-backed dataset is read from (empty for the bundled one)."""
    name = data_cfg["dataset"]
    if name not in NUM_CLASSES or name == "animals":
        return []
    root = Path(data_cfg["data_root"])
    if name in CIFAR_FILES:
        folder, files = CIFAR_FILES[name]
        return [root / folder / f for f in files]
    if name == "celeba5":
        folder, files = CELEBA_FILES
        return [root / folder / f for f in files]
    if name == "imagenet_lt":
        folder, files = IMAGENET_LT_FILES
        return [root / folder / f for f in files] + [root / IMAGENET_FOLDER]
    return []


def missing_dataset_message(data_cfg: dict) -> str | None:
    """One line saying which files are missing, where, and which key to set; None when all are there."""
    missing = [path for path in dataset_files(data_cfg) if not path.exists()]
    name = data_cfg["dataset"]
    if not missing or (data_cfg["download"] and name in DOWNLOADABLE):
        return None
    download = ", or set data.download: true" if name in DOWNLOADABLE else " (it cannot be downloaded)"
    return (f"data.data_root: dataset {name!r} is not under {data_cfg['data_root']!r} (missing "
            f"{', '.join(str(p) for p in missing[:3])}{' ...' if len(missing) > 3 else ''}); put "
            f"{HOW_TO_GET[name]} there, point data.data_root at it{download}")


# torch-fidelity's Inception weights (inception-v3-compat): the file its FeatureExtractorInceptionV3 downloads
# when given no path (torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3; a test holds them equal).
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")


def missing_inception_message(evaluate_cfg: dict) -> str | None:
    """One line saying which weights file to put where and where it comes from; None when the file is
    there, the extractor needs none, or the workflow is to fetch it (evaluate.inception_download)."""
    path = evaluate_cfg["inception_weights_path"]
    if evaluate_cfg["feature_extractor"] != "inception-v3-compat" or (path and Path(path).is_file()):
        return None
    if path is None:
        return (f"evaluate.inception_weights_path: null; inception-v3-compat needs torch-fidelity's Inception "
                f"weights, {INCEPTION_URL}: set the key to where that file is (or is to be fetched to)")
    if evaluate_cfg["inception_download"]:
        return None
    return (f"evaluate.inception_weights_path: {path!r} is not a file; inception-v3-compat needs torch-fidelity's "
            f"Inception weights there: download {INCEPTION_URL} to {path}, or set evaluate.inception_download: "
            "true to fetch it on first use")


def download_inception_weights(path: str | Path, url: str = INCEPTION_URL) -> None:
    """Fetch torch-fidelity's Inception weights into `path` (rule inception_weights); a failure is one line
    saying what to put where by hand. torch.hub writes a temporary file and renames it when complete."""
    from torch.hub import download_url_to_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(path), progress=False)
    except OSError as err:  # URLError and HTTPError are OSErrors
        from coral.io import DatasetError
        raise DatasetError(f"evaluate.inception_weights_path: could not download {url} ({err}); download it by "
                           f"hand to {path}") from None
