"""CelebA-5 and ImageNet-LT read from small synthetic datasets in their real on-disk formats."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from coral import photo_datasets
from coral.io import DatasetError
from coral.photo_datasets import CELEBA5_CLASSES, load_celeba5, load_imagenet_lt

# line 2 of list_attr_celeba.txt, in the real file's order (the hair attributes are not the first columns)
CELEBA_HEADER = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young")
CELEBA_ATTRIBUTES = CELEBA_HEADER.split()

# (hair attributes set to 1, partition); the expected CelebA-5 label, or None when the image is excluded
CELEBA_ROWS = [
    (["Brown_Hair"], 0, 3), (["Blond_Hair"], 0, 0), (["Black_Hair", "Blond_Hair"], 0, None),
    (["Gray_Hair"], 0, 4), (["Bald"], 0, 2), (["Black_Hair"], 0, 1), ([], 0, None), (["Brown_Hair"], 0, 3),
    (["Black_Hair"], 1, None), (["Blond_Hair"], 0, 0), (["Gray_Hair"], 2, None), (["Black_Hair"], 0, 1),
    (["Brown_Hair"], 0, 3), (["Gray_Hair"], 0, 4), (["Bald"], 0, 2), (["Blond_Hair"], 0, 0),
    (["Black_Hair"], 0, 1), (["Brown_Hair"], 0, 3), (["Brown_Hair"], 0, 3), (["Black_Hair"], 0, 1),
    (["Bald", "Gray_Hair"], 0, None), (["Gray_Hair"], 0, 4),
]
EXPECTED_COUNTS = [3, 4, 2, 5, 3]  # blond, black, bald, brown, gray, counted by hand from CELEBA_ROWS


def colour(i: int) -> tuple[int, int, int]:
    """A distinct solid colour per image (channels at least 40 apart between any two images)."""
    return (20 + 40 * (i % 6), 20 + 40 * (i // 6 % 6), 220 - 40 * (i // 36))


def save_jpeg(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels.astype(np.uint8), mode).save(path, "JPEG", quality=95, subsampling=0)


def solid(w: int, h: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def mean_colours(images) -> np.ndarray:
    """(N, 3) mean colour of uint8 (N, 3, S, S) images."""
    return images.float().mean(dim=(2, 3)).numpy()


def write_celeba(root, rows=CELEBA_ROWS) -> list[str]:
    folder = root / "celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(len(rows))]
    lines = [f"{len(rows)}", " ".join(CELEBA_ATTRIBUTES) + " "]
    for i, (name, (hair, partition, _)) in enumerate(zip(names, rows)):
        on = set(hair) | {"Smiling", "Young"} if i % 2 else set(hair)  # other attributes must not matter
        lines.append(name + " " + " ".join(f"{1 if a in on else -1:2d}" for a in CELEBA_ATTRIBUTES))
        save_jpeg(folder / "img_align_celeba" / name, solid(178, 218, colour(i)))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {partition}\n" for name, (_, partition, _) in zip(names, rows)))
    return names


def celeba_cfg(root, size=8, seed=0) -> dict:
    return {"dataset": "celeba5", "data_root": str(root), "image_size": size, "subsample_seed": seed,
            "download": False}


def test_celeba5_train_selects_single_hair_attribute_train_images(tmp_path):
    write_celeba(tmp_path)
    images, labels, class_names = load_celeba5(celeba_cfg(tmp_path), "train")
    kept = [i for i, row in enumerate(CELEBA_ROWS) if row[2] is not None]
    assert class_names == ["blond", "black", "bald", "brown", "gray"] == CELEBA5_CLASSES
    assert images.shape == (len(kept), 3, 8, 8) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert labels.tolist() == [CELEBA_ROWS[i][2] for i in kept]
    assert np.bincount(labels.numpy()).tolist() == EXPECTED_COUNTS
    assert np.abs(mean_colours(images) - np.array([colour(i) for i in kept])).max() < 10


def test_celeba5_reference_is_balanced_subset_of_train(tmp_path):
    write_celeba(tmp_path)
    train_images, train_labels, _ = load_celeba5(celeba_cfg(tmp_path, seed=3), "train")
    images, labels, _ = load_celeba5(celeba_cfg(tmp_path, seed=3), "reference")
    n_min = min(EXPECTED_COUNTS)
    assert labels.tolist() == [c for c in range(5) for _ in range(n_min)]
    # each member is a distinct train image of the same class, found by its colour
    train_colours, ref_colours = mean_colours(train_images), mean_colours(images)
    matches = [int(np.abs(train_colours - c).max(axis=1).argmin()) for c in ref_colours]
    assert all(np.abs(train_colours[m] - c).max() < 10 for m, c in zip(matches, ref_colours))
    assert len(set(matches)) == len(matches)
    assert [int(train_labels[m]) for m in matches] == labels.tolist()
    # the documented rule: one RandomState(seed) shuffles each class's indices in label order, keeps n_min
    rng, expected = np.random.RandomState(3), []
    for c in range(5):
        idx = np.flatnonzero(train_labels.numpy() == c)
        rng.shuffle(idx)
        expected += idx[:n_min].tolist()
    assert matches == expected
    again, _, _ = load_celeba5(celeba_cfg(tmp_path, seed=3), "reference")
    assert again.equal(images)


def test_celeba5_centre_crop(tmp_path):
    rows = [([attr], 0, c) for c, attr in enumerate(photo_datasets.CELEBA5_ATTRIBUTES)]
    write_celeba(tmp_path, rows)
    pixels = solid(178, 218, (0, 0, 255))
    pixels[39:179, 19:159] = (255, 0, 0)  # the 140x140 centre of the 178 wide x 218 high image
    save_jpeg(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", pixels)
    stripes = solid(178, 218, (0, 0, 0))
    stripes[:, ::4] = stripes[:, 1::4] = 255  # 2-pixel stripes: an antialiased resize averages them to grey
    save_jpeg(tmp_path / "celeba" / "img_align_celeba" / "000002.jpg", stripes)
    images, _, _ = load_celeba5(celeba_cfg(tmp_path, size=8), "train")
    assert np.abs(images[0].permute(1, 2, 0).numpy().astype(int) - (255, 0, 0)).max() < 10
    assert np.abs(images[1].numpy().astype(int) - 128).max() < 20
    # without the crop the corners would be blue
    whole = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.BICUBIC)).astype(int)
    assert whole[0, 0, 2] > 128


def test_celeba5_errors(tmp_path):
    names = write_celeba(tmp_path)
    folder = tmp_path / "celeba"
    with pytest.raises(ValueError, match="train"):
        load_celeba5(celeba_cfg(tmp_path), "test")
    (folder / "img_align_celeba" / names[1]).unlink()
    with pytest.raises(DatasetError, match=re.escape(str(folder / "img_align_celeba" / names[1]))):
        load_celeba5(celeba_cfg(tmp_path), "train")
    (folder / "img_align_celeba" / names[1]).write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=re.escape(f"{names[1]}: cannot use this image")):
        load_celeba5(celeba_cfg(tmp_path), "train")
    attr = folder / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(lines[:4] + [lines[4].rsplit(" ", 1)[0]] + lines[5:]) + "\n")  # 39 values
    with pytest.raises(DatasetError, match=re.escape(f"{attr}:5: expected an image name and 40 values")):
        load_celeba5(celeba_cfg(tmp_path), "train")
    attr.write_text("\n".join([lines[0], lines[1].replace("Gray_Hair", "Grey_Hair")] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=re.escape(f"{attr}:2: ") + ".*Gray_Hair"):
        load_celeba5(celeba_cfg(tmp_path), "train")
    attr.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{attr}: no such file")):
        load_celeba5(celeba_cfg(tmp_path), "train")


SYNSETS = ["n01440764", "n01443537", "n01484850"]


def write_imagenet_lt(root, train_counts=(4, 2, 1), test_per_class=2) -> dict:
    """Solid-colour JPEGs of assorted shapes; returns each list's (relative path, label, colour) rows."""
    shapes = [(96, 64), (64, 96), (50, 50), (120, 80)]
    rows, k = {"train": [], "val": []}, 0
    for split, counts in (("train", train_counts), ("val", [test_per_class] * len(SYNSETS))):
        for label, n in enumerate(counts):
            for j in range(n):
                rel = f"{split}/{SYNSETS[label]}/{SYNSETS[label]}_{j}.JPEG"
                save_jpeg(root / "imagenet" / rel, solid(*shapes[k % len(shapes)], colour(k)))
                rows[split].append((rel, label, colour(k)))
                k += 1
    lists = root / "imagenet_lt"
    lists.mkdir(parents=True)
    for split, name in (("train", "ImageNet_LT_train.txt"), ("val", "ImageNet_LT_test.txt")):
        order = rows[split][::-1]  # list order, not folder order
        (lists / name).write_text("".join(f"{rel} {label}\n" for rel, label, _ in order))
        rows[split] = order
    return rows


def imagenet_cfg(root, size=8) -> dict:
    return {"dataset": "imagenet_lt", "data_root": str(root), "image_size": size, "subsample_seed": 0}


@pytest.mark.parametrize("part,split", [("train", "train"), ("reference", "val")])
def test_imagenet_lt_labels_and_synsets(tmp_path, part, split):
    rows = write_imagenet_lt(tmp_path)[split]
    images, labels, class_names = load_imagenet_lt(imagenet_cfg(tmp_path, size=16), part)
    assert class_names == SYNSETS
    assert images.shape == (len(rows), 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == [label for _, label, _ in rows] and labels.dtype == torch.int64
    assert np.abs(mean_colours(images) - np.array([c for _, _, c in rows])).max() < 10


@pytest.mark.parametrize("size", [8, 32])
def test_imagenet_lt_centre_square_and_grayscale(tmp_path, size):
    rows = write_imagenet_lt(tmp_path)["train"]
    folder = tmp_path / "imagenet"
    landscape = solid(160, 96, (0, 0, 255))
    landscape[:, 32:128] = (255, 0, 0)  # the centre 96x96 square
    portrait = solid(96, 160, (0, 0, 255))
    portrait[32:128] = (0, 255, 0)
    save_jpeg(folder / rows[0][0], landscape)
    save_jpeg(folder / rows[1][0], portrait)
    save_jpeg(folder / rows[2][0], np.full((70, 90), 128, np.uint8))  # grayscale JPEG
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(folder / rows[3][0], "JPEG", quality=95)  # red in CMYK
    images, _, _ = load_imagenet_lt(imagenet_cfg(tmp_path, size=size), "train")
    pixels = images.permute(0, 2, 3, 1).numpy().astype(int)
    assert np.abs(pixels[0] - (255, 0, 0)).max() < 10
    assert np.abs(pixels[1] - (0, 255, 0)).max() < 10
    assert np.abs(pixels[2] - 128).max() < 10
    assert np.abs(pixels[3] - (255, 0, 0)).max() < 20


def test_imagenet_lt_errors(tmp_path):
    rows = write_imagenet_lt(tmp_path)
    train_list = tmp_path / "imagenet_lt" / "ImageNet_LT_train.txt"
    test_list = tmp_path / "imagenet_lt" / "ImageNet_LT_test.txt"
    with pytest.raises(ValueError, match="reference"):
        load_imagenet_lt(imagenet_cfg(tmp_path), "val")
    missing = tmp_path / "imagenet" / rows["val"][1][0]
    missing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        load_imagenet_lt(imagenet_cfg(tmp_path), "reference")
    lines = train_list.read_text().splitlines()
    train_list.write_text("\n".join(lines[:2] + [lines[2].split()[0]] + lines[3:]) + "\n")  # no label
    with pytest.raises(DatasetError, match=re.escape(f"{train_list}:3: expected")):
        load_imagenet_lt(imagenet_cfg(tmp_path), "train")
    train_list.write_text("\n".join(lines + [f"train/{SYNSETS[1]}/extra.JPEG 0"]) + "\n")  # label 0, other synset
    message = f"{train_list}:{len(lines) + 1}: label 0 is in folder {SYNSETS[1]}"
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_imagenet_lt(imagenet_cfg(tmp_path), "train")
    train_list.write_text("".join(f"{rel} {2 * label}\n" for rel, label, _ in rows["train"]))  # labels 0, 2, 4
    with pytest.raises(DatasetError, match=re.escape(f"{train_list}: labels go up to 4, but [1, 3] never appear")):
        load_imagenet_lt(imagenet_cfg(tmp_path), "train")
    train_list.write_text("\n".join(lines) + "\n")
    test_list.write_text(f"val/{SYNSETS[0]}/a.JPEG 1\nval/{SYNSETS[1]}/b.JPEG 0\n")
    with pytest.raises(DatasetError, match=re.escape(f"{test_list}: label 0 is synset {SYNSETS[1]}")):
        load_imagenet_lt(imagenet_cfg(tmp_path), "reference")
    train_list.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{train_list}: no such file")):
        load_imagenet_lt(imagenet_cfg(tmp_path), "train")


def test_worker_processes_decode_and_report_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(photo_datasets, "MIN_IMAGES_FOR_WORKERS", 1)
    monkeypatch.setattr(photo_datasets, "BATCH_SIZE", 2)
    rows = write_imagenet_lt(tmp_path)["train"]
    images, _, _ = load_imagenet_lt(imagenet_cfg(tmp_path), "train")
    assert np.abs(mean_colours(images) - np.array([c for _, _, c in rows])).max() < 10
    bad = tmp_path / "imagenet" / rows[-1][0]
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: cannot use this image")):
        load_imagenet_lt(imagenet_cfg(tmp_path), "train")


@pytest.mark.parametrize("threads,workers", [(1, 0), (3, 3)])
def test_decoding_uses_one_worker_per_thread_of_the_job(tmp_path, monkeypatch, threads, workers):
    """A rule's `threads` (torch's thread count in a job) set the decoding processes, not the machine's cores."""
    paths = []
    for i in range(photo_datasets.MIN_IMAGES_FOR_WORKERS):
        paths.append(tmp_path / f"{i}.jpg")
        save_jpeg(paths[-1], solid(8, 8, (i % 256, 128, 255 - i % 256)))
    asked = []

    def data_loader(dataset, num_workers, **kwargs):  # records the ask, decodes in this process
        asked.append(num_workers)
        return torch.utils.data.DataLoader(dataset, num_workers=0, **kwargs)

    monkeypatch.setattr(photo_datasets, "DataLoader", data_loader)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        images = photo_datasets.decode_images(paths, 8, None, "test")
    finally:
        torch.set_num_threads(previous)
    assert asked == [workers] and images.shape == (len(paths), 3, 8, 8)
