"""Disk-backed datasets read from small synthetic files in their real on-disk formats."""
import pickle

import numpy as np
import pytest
import yaml

from coral.config import ConfigError, resolve
from coral.data import load_dataset

import standins


def write_cifar(root, name, per_class, num_classes):
    """torchvision's layout: protocol-2 pickles of dicts with a (N, 3072) uint8 'data' array, rows R|G|B."""
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(num_classes), per_class)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    if name == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", "labels"
        chunks = np.array_split(np.arange(len(labels)), 5)
        files = {f"data_batch_{i + 1}": chunk for i, chunk in enumerate(chunks)}
        meta = ("batches.meta", {"label_names": [f"class{c}" for c in range(num_classes)]})
    else:
        folder, label_key = root / "cifar-100-python", "fine_labels"
        files = {"train": np.arange(len(labels))}
        meta = ("meta", {"fine_label_names": [f"fine{c}" for c in range(num_classes)]})
    folder.mkdir(parents=True)
    for file_name, rows in files.items():
        batch = {"batch_label": file_name, label_key: labels[rows].tolist(), "data": data[rows],
                 "filenames": [f"img{i}.png" for i in rows]}
        (folder / file_name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return data, labels


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_real_format(tmp_path, name, num_classes):
    data, labels = write_cifar(tmp_path, name, per_class=2, num_classes=num_classes)
    loaded = load_dataset({"dataset": name, "data_root": str(tmp_path), "download": False, "image_size": 32}, "train")
    assert loaded.images.shape == (2 * num_classes, 3, 32, 32) and loaded.num_classes == num_classes
    assert loaded.labels.tolist() == labels.tolist()
    first = data[0]  # 1024 red, then green, then blue values, row-major
    assert loaded.images[0, 1, 0, 5].item() == first[1024 + 5]
    assert loaded.images[0, 2, 31, 31].item() == first[3071]
    assert loaded.class_names[-1] == (f"class{num_classes - 1}" if name == "cifar10" else f"fine{num_classes - 1}")


def test_cifar_pickle_with_code_is_refused(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=1, num_classes=10)

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3: not a CIFAR batch file"):
        load_dataset({"dataset": "cifar10", "data_root": str(tmp_path), "download": False, "image_size": 32}, "train")


def test_missing_dataset_stops_before_any_job(tmp_path):
    raw = yaml.safe_load(open("config.yaml"))
    raw["data"].update(settings=[{"dataset": "cifar10", "rho": 0.01}], data_root=str(tmp_path / "nowhere"))
    raw["data"]["image_size"] = 32
    with pytest.raises(ConfigError) as info:
        resolve(raw)
    message = str(info.value)
    assert message.startswith("data.data_root: dataset 'cifar10' is not under")
    assert "cifar-10-batches-py/data_batch_1" in message and "data.download: true" in message
    assert "\n" not in message


def test_naturally_long_tailed_sets_through_the_pipeline_interface(tmp_path):
    """CelebA-5 and ImageNet-LT files in their real formats -> a setting without rho -> split and reference."""
    from coral.grid import setting_config
    from coral.data import load_reference, load_split, write_reference, write_split

    standins.write_celeba(tmp_path)
    rows = standins.write_imagenet_lt(tmp_path, train_counts=(4, 2, 1), test_per_class=2)
    raw = yaml.safe_load(open("config.yaml"))
    raw["data"].update(settings=[{"dataset": "celeba5"}, {"dataset": "imagenet_lt"}], data_root=str(tmp_path),
                       image_size=8)
    raw["sample"]["num_samples"] = 6000  # a multiple of 5 and of ImageNet-LT's 1000 classes, 6 a class (k + 1)
    cfg = resolve(raw)  # both datasets are found on disk
    for setting in ["celeba5", "imagenet_lt"]:
        data = setting_config(cfg, setting)["data"]
        assert data["rho"] is None
        write_split(data, data["rho"], tmp_path / f"{setting}.npz", tmp_path / f"{setting}.csv")
        write_reference(data, tmp_path / f"{setting}-reference.npz")
    celeba = load_split(tmp_path / "celeba5.npz")  # the whole naturally long-tailed training set, kept
    assert celeba.images.shape[1:] == (3, 8, 8) and len(celeba.indices) == celeba.class_counts.sum()
    assert celeba.class_names == ["blond", "black", "bald", "brown", "gray"]
    reference = load_reference(tmp_path / "celeba5-reference.npz")
    assert np.bincount(reference.labels.numpy()).tolist() == [celeba.class_counts.min()] * 5
    imagenet = load_split(tmp_path / "imagenet_lt.npz")
    assert imagenet.class_counts.tolist() == [4, 2, 1] and len(rows["train"]) == 7
    assert np.bincount(load_reference(tmp_path / "imagenet_lt-reference.npz").labels.numpy()).tolist() == [2, 2, 2]


def test_cifar_download_runs_once_when_two_jobs_load_it_at_once(tmp_path, monkeypatch):
    """subsample and reference read CIFAR at the same time: one downloads (here a fake that writes the
    files slowly, nothing is fetched), the other waits and reads what it wrote."""
    import threading
    import time

    import torchvision.datasets.utils

    calls = []

    def fake_download(url, root, md5):
        calls.append(url)
        time.sleep(0.5)  # the other loader arrives while this one is still writing
        write_cifar(tmp_path, "cifar10", per_class=1, num_classes=10)

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    cfg = {"dataset": "cifar10", "data_root": str(tmp_path), "download": True, "image_size": 32}
    loaded = []
    threads = [threading.Thread(target=lambda: loaded.append(load_dataset(cfg, "train"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert [len(images.labels) for images in loaded] == [10, 10]
