"""The paper preset's code paths, rehearsed end to end on the CPU (preset `rehearsal`, config.yaml).

Stand-ins for CIFAR-100, CelebA and ImageNet-LT in their real on-disk formats (tests/standins.py) and a
random-weights Inception file in torch-fidelity's format go under a temporary data root; Snakemake then
builds results/tables/main.csv and paper_vs_ours.csv from them, about 3-4 minutes on 2 cores.
"""
import json
import math
import os
import pickle
import re
import subprocess
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import standins
from conftest import CONFIG, REPO, SNAKEMAKE, planned_jobs

pytestmark = pytest.mark.slow  # the workflow end to end

METHODS = ["ddpm", "cbdm", "t2h", "coral"]
CLASSES = {"celeba5": 5, "cifar100": 100, "imagenet_lt": 1000}
CELEBA_TRAIN_COUNTS = (6, 8, 2, 10, 3)  # standins.write_celeba's default: blond, black, bald, brown, gray
# published cells (coral/published/coral_neurips2025.csv) of the rehearsal's settings, each for the four methods
PUBLISHED = {"cifar100-rho0.01": ["FID", "IS"], "celeba5": ["FID"], "imagenet_lt": ["FID", "IS", "Recall"]}
METRICS = ["fid", "isc", "kid", "precision", "recall", "prd_f8", "prd_f1_8", "tail_fid", "tail_kid",
           "tail_accuracy", "head_fid", "head_accuracy"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standins")
    standins.write_all(root)
    return root


def rehearsal(workdir: Path, data_root: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on the rehearsal preset: targets and flags in `args`, then the config (which takes every
    argument after it). Command-line keys are YAML mappings: Snakemake refuses dotted names."""
    weights = data_root / standins.INCEPTION_FILE
    config = ["--config", "preset=rehearsal", "data=" + json.dumps({"data_root": str(data_root)}),
              "evaluate=" + json.dumps({"inception_weights_path": str(weights)})]
    # one BLAS thread per job, like torch's: two jobs on two cores with two threads each stall
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(SNAKEMAKE + ["--configfile", str(CONFIG), "-d", str(workdir), *args, *config],
                          capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.fixture(scope="module")
def rehearsal_run(tmp_path_factory, data_root) -> Path:
    workdir = tmp_path_factory.mktemp("rehearsal")
    start = time.perf_counter()
    result = rehearsal(workdir, data_root, "--cores", "2", "results/tables/main.csv",
                       "results/tables/paper_vs_ours.csv")
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"rehearsal: main.csv and paper_vs_ours.csv in {time.perf_counter() - start:.0f} s")
    return workdir / "results"


def paper_preset() -> dict:
    return yaml.safe_load(open(REPO / "config.yaml"))["presets"]["paper"]


def paper_section(dataset: str, section: str) -> dict:
    """A config section of the paper preset for one dataset: its keys, then the dataset's overrides."""
    paper = paper_preset()
    return {**paper.get(section, {}), **paper["dataset_overrides"].get(dataset, {}).get(section, {})}


# ---------------------------------------------------------------- the stand-ins are the real formats


def test_cifar100_standin_is_torchvisions_format(data_root):
    folder = data_root / "cifar-100-python"
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")  # how torchvision reads it
    assert set(train) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
    assert train["data"].dtype == np.uint8 and train["data"].shape == (100 * 100, 3072)
    assert np.bincount(train["fine_labels"]).tolist() == [100] * 100
    import torchvision.datasets.cifar as tv_cifar
    # torchvision checks the MD5 of the real archive's files, which a stand-in cannot match; the rest is its reader
    with mock.patch.object(tv_cifar, "check_integrity", return_value=True):
        dataset = tv_cifar.CIFAR100(str(data_root), train=True, download=False)
        test_set = tv_cifar.CIFAR100(str(data_root), train=False, download=False)
    assert len(dataset) == 10000 and len(test_set) == 200 and len(dataset.classes) == 100
    image, label = dataset[7]
    assert label == train["fine_labels"][7]
    # a row is the 1024 red, then green, then blue values of the image, row-major
    assert np.array_equal(np.asarray(image), train["data"][7].reshape(3, 32, 32).transpose(1, 2, 0))


def test_imagenet_lt_standin_lists_and_jpegs(data_root):
    lists = data_root / "imagenet_lt"
    patterns = {"ImageNet_LT_train.txt": r"train/(n\d{8})/\1_\d+\.JPEG (\d+)",
                "ImageNet_LT_test.txt": r"val/(n\d{8})/ILSVRC2012_val_\d{8}\.JPEG (\d+)"}
    counts = {}
    for name, pattern in patterns.items():
        lines = (lists / name).read_text().splitlines()
        matches = [re.fullmatch(pattern, line) for line in lines]
        assert all(matches), next(line for line, m in zip(lines, matches) if not m)
        synset_of = {}
        for m in matches:
            assert synset_of.setdefault(int(m[2]), m[1]) == m[1]  # one synset per label
        assert sorted(synset_of) == list(range(1000))
        assert [synset_of[c] for c in range(1000)] == sorted(synset_of.values())  # labels follow sorted synsets
        counts[name] = np.bincount([int(m[2]) for m in matches])
        for line in lines[:3] + lines[-3:]:
            with Image.open(data_root / "imagenet" / line.split()[0]) as image:
                assert image.format == "JPEG" and image.mode == "RGB"
    assert counts["ImageNet_LT_test.txt"].tolist() == [2] * 1000  # balanced, like the real test list
    train = counts["ImageNet_LT_train.txt"]
    assert train.min() == 1 and train.max() == 5 and train.argmax() != 0  # long-tailed, head not at label 0


def test_celeba_standin_attribute_and_partition_files(data_root):
    folder = data_root / "celeba"
    attr = (folder / "list_attr_celeba.txt").read_text().splitlines()
    names = attr[1].split()
    assert len(names) == 40 and {"Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair"} <= set(names)
    rows = [line.split() for line in attr[2:]]
    assert int(attr[0]) == len(rows)
    assert all(len(r) == 41 and re.fullmatch(r"\d{6}\.jpg", r[0]) and set(r[1:]) <= {"1", "-1"} for r in rows)
    partition = dict(line.split() for line in (folder / "list_eval_partition.txt").read_text().splitlines())
    assert list(partition) == [r[0] for r in rows] and set(partition.values()) == {"0", "1", "2"}
    hair = [names.index(a) + 1 for a in ["Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair"]]
    single = [[r[col] for col in hair].index("1") for r in rows
              if [r[col] for col in hair].count("1") == 1 and partition[r[0]] == "0"]
    assert np.bincount(single).tolist() == list(CELEBA_TRAIN_COUNTS)
    with Image.open(folder / "img_align_celeba" / rows[0][0]) as image:
        assert image.format == "JPEG" and image.size == (178, 218)


def test_inception_weights_load_into_torch_fidelity(data_root):
    from torch_fidelity.utils import create_feature_extractor
    path = data_root / standins.INCEPTION_FILE
    state = torch.load(path, weights_only=True)  # plain tensors, no pickled code
    assert state["fc.weight"].shape == (1008, 2048) and state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    # torch-fidelity loads the file with a strict load_state_dict: every key and shape must match
    extractor = create_feature_extractor("inception-v3-compat", ["2048", "logits_unbiased"], cuda=False,
                                         feature_extractor_weights_path=str(path), verbose=False)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[1] = 255
    features, logits = extractor(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(features).all() and 0.01 < features.std() < 100  # neither vanished nor exploded
    assert not torch.allclose(features[0], features[1])


# ---------------------------------------------------------------- the workflow on them


def test_rehearsal_plans_every_paper_setting(tmp_path, data_root):
    result = rehearsal(tmp_path, data_root, "-n", "results/tables/main.csv")
    settings, datasets = 3, 3  # CIFAR100-LT rho 0.01, CelebA-5, ImageNet-LT; one seed
    assert planned_jobs(result) == {
        "subsample": settings, "reference": datasets, "train_classifier": datasets, "reference_features": datasets,
        "train": settings * 4, "sample": settings * 4, "evaluate": settings * 4, "main_table": 1}, \
        result.stdout + result.stderr
    for setting in ["cifar100-rho0.01", "celeba5", "imagenet_lt"]:
        assert f"results/metrics/{setting}/coral/seed0/ddpm-w1.0.json" in result.stdout


def test_main_table_has_every_setting_and_method(rehearsal_run):
    main = pd.read_csv(rehearsal_run / "tables" / "main.csv")
    assert list(zip(main["dataset"], main["method"])) == [(d, m) for d in CLASSES for m in METHODS]
    assert main.loc[main["dataset"] == "cifar100", "rho"].tolist() == [0.01] * 4
    assert main.loc[main["dataset"] != "cifar100", "rho"].isna().all()
    assert np.isfinite(main[[f"{m}_mean" for m in METRICS]].to_numpy(dtype=float)).all()
    assert set(main["sampler"]) == {"ddpm"} and set(main["num_seeds"]) == {1}
    # the ancestral sampler runs every step of the schedule: T = 1000 on CelebA-5, 2 elsewhere here
    assert main["steps"].tolist() == [1000 if d == "celeba5" else 2 for d in main["dataset"]]
    assert main["num_samples"].tolist() == [2 * CLASSES[d] for d in main["dataset"]]  # 2 per class
    extractor = dict(zip(main["dataset"], main["feature_extractor"]))
    assert extractor["celeba5"] == "inception-v3-compat"
    assert all(extractor[d].startswith("coral-classifier") for d in ["cifar100", "imagenet_lt"])


def test_paper_vs_ours_has_the_published_cells(rehearsal_run):
    table = pd.read_csv(rehearsal_run / "tables" / "paper_vs_ours.csv")
    expected = {(s, metric, m) for s, metrics in PUBLISHED.items() for metric in metrics for m in METHODS}
    assert set(zip(table["setting"], table["metric"], table["method"])) == expected and len(table) == len(expected)
    published = pd.read_csv(REPO / "coral" / "published" / "coral_neurips2025.csv")
    merged = table.merge(published, on=["setting", "metric", "method"], suffixes=("", "_file"))
    assert (merged["published"] == merged["value"]).all()
    assert np.allclose(merged["difference"], merged["ours"] - merged["published"])
    assert (table["comparable"] == (table["setting"] == "celeba5")).all()  # Inception features only there


def test_rehearsal_ran_the_paper_code_paths(rehearsal_run):
    paper = paper_preset()
    for setting, method in [("celeba5", "coral"), ("cifar100-rho0.01", "t2h"), ("imagenet_lt", "cbdm")]:
        run = json.loads((rehearsal_run / "runs" / setting / method / "seed0" / "config.json").read_text())["config"]
        for key in ("bf16_autocast", "channels_last"):  # the paper's precision and layout for this dataset
            assert run["train"][key] == paper_section(run["data"]["dataset"], "train")[key], (setting, key)
        assert run["data"]["hflip"] == paper["data"]["hflip"]
        with np.load(rehearsal_run / "samples" / setting / method / "seed0" / "ddpm-w1.0.npz") as z:
            meta, images = json.loads(str(z["meta"])), z["images"]
        dataset = run["data"]["dataset"]
        assert meta["sampler"] == "ddpm"
        assert meta["bf16_autocast"] == paper_section(dataset, "sample")["bf16_autocast"]
        assert images.shape == (2 * CLASSES[dataset], 3, run["data"]["image_size"], run["data"]["image_size"])
    celeba = json.loads((rehearsal_run / "runs/celeba5/ddpm/seed0/config.json").read_text())["config"]
    assert celeba["diffusion"]["T"] == 1000  # the ancestral sampler's 1000 steps
    # the 64 px network's five levels (attention on the third), here at 16 px: a 1x1 bottleneck
    cifar = json.loads((rehearsal_run / "runs/cifar100-rho0.01/ddpm/seed0/config.json").read_text())["config"]
    for key in ("ch_mult", "attn"):
        assert cifar["model"][key] == paper["dataset_overrides"]["imagenet_lt"]["model"][key]
    assert cifar["data"]["image_size"] == 16


def test_splits_follow_the_standins_class_counts(rehearsal_run, data_root):
    def counts(setting):
        return pd.read_csv(rehearsal_run / "data" / setting / "class_counts.csv")["count"].tolist()

    assert counts("cifar100-rho0.01") == [int(100 * 0.01 ** (i / 99)) for i in range(100)]  # docs/method.md §1
    assert counts("celeba5") == list(CELEBA_TRAIN_COUNTS)
    labels = [int(line.split()[1]) for line in (data_root / "imagenet_lt" / "ImageNet_LT_train.txt").open()]
    assert counts("imagenet_lt") == np.bincount(labels, minlength=1000).tolist()
    per_class = pd.read_csv(rehearsal_run / "metrics/imagenet_lt/coral/seed0/ddpm-w1.0_per_class.csv")
    assert len(per_class) == 1000 and (per_class["num_generated"] == 2).all() and (per_class["num_real"] == 2).all()
    assert math.isfinite(per_class["fid"].mean())
