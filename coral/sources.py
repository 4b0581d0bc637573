"""Where each dataset lives on disk and what it holds: checked before any job, no torch needed."""
from __future__ import annotations

from pathlib import Path

NUM_CLASSES = {"animals": 10, "cifar10": 10, "cifar100": 100}

# torchvision's on-disk layout under data.data_root
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "meta"]),
}
CIFAR_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def dataset_files(data_cfg: dict) -> list[Path]:
    """The files a disk-backed dataset is read from (empty for the bundled one)."""
    name = data_cfg["dataset"]
    if name in CIFAR_FILES:
        folder, files = CIFAR_FILES[name]
        return [Path(data_cfg["data_root"]) / folder / f for f in files]
    return []


def missing_dataset_message(data_cfg: dict) -> str | None:
    """One line saying which files are missing, where, and which key to set; None when all are there."""
    missing = [path for path in dataset_files(data_cfg) if not path.is_file()]
    if not missing or data_cfg["download"]:
        return None
    name = data_cfg["dataset"]
    return (f"data.data_root: dataset {name!r} is not under {data_cfg['data_root']!r} (missing "
            f"{', '.join(str(p) for p in missing[:3])}{' ...' if len(missing) > 3 else ''}); put torchvision's "
            f"{CIFAR_FILES[name][0]}/ folder there, point data.data_root at it, or set data.download: true")
