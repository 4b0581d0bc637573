"""Latent structure: bottleneck features, separation scores, t-SNE and the latent stage's files."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import coral.figures as figures
import coral.latent as latent
from coral.diffusion import Diffusion
from coral.latent import (bottleneck_features, knn_purity_per_point, run_latent, select_per_class,
                          separation_scores, tsne_embedding)
from coral.sections import LatentConfig
from coral.unet import build_unet

SMALL_UNET = {"ch": 32, "ch_mult": [1, 2], "attn": [], "num_res_blocks": 1, "dropout": 0.0}


def small_model(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_unet(SMALL_UNET, in_channels=3, num_classes=num_classes)
    # The UNet starts with near-zero residual branches; randomise them so t and y visibly matter.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def toy_images(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return images, torch.arange(n) % 10


def points_at_angles(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# ---------------------------------------------------------------- separation scores

def test_knn_purity_hand_computed():
    # Cosine distance is monotone in the angle between points, so neighbours follow angles.
    # class 0 at 0, 5, 15 degrees; class 1 at 40, 90 degrees.
    features = points_at_angles([0, 5, 15, 40, 90])
    labels = np.array([0, 0, 0, 1, 1])
    # k=1: 0->5, 5->0, 15->5, 40->15 (wrong class), 90->40.
    np.testing.assert_allclose(knn_purity_per_point(features, labels, 1), [1, 1, 1, 0, 1])
    # k=2: 40 -> {15, 5} both class 0; 90 -> {40, 15}: one of two.
    np.testing.assert_allclose(knn_purity_per_point(features, labels, 2), [1, 1, 1, 0, 0.5])
    scores = separation_scores(features, labels, ["head", "tail"], k=2)
    assert scores["knn_purity"] == pytest.approx(3.5 / 5)
    assert scores["knn_purity_head"] == pytest.approx(1.0)
    assert scores["knn_purity_tail"] == pytest.approx(0.25)
    assert math.isnan(scores["knn_purity_medium"]) and math.isnan(scores["silhouette_medium"])


def test_knn_purity_excludes_self_even_with_duplicates():
    # Two identical points of different classes: each one's nearest other point is its twin.
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array([0, 1, 0, 0])
    np.testing.assert_allclose(knn_purity_per_point(features, labels, 1), [0, 0, 1, 1])
    # Three identical points: the search may not even return the point itself; still never counted.
    features = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0], [0.1, 1.0]])
    labels = np.array([0, 1, 1, 0, 0])
    assert knn_purity_per_point(features, labels, 1)[0] == 0


def test_silhouette_matches_formula_with_cosine_distance():
    features = points_at_angles([0, 10, 30, 80, 100, 170])
    labels = np.array([0, 0, 0, 1, 1, 2])  # class 2 is a singleton: silhouette 0 by definition
    groups = ["head", "medium", "tail"]
    distance = 1 - features @ features.T  # unit vectors: cosine distance
    expected = []
    for i, c in enumerate(labels):
        same = (labels == c) & (np.arange(len(labels)) != i)
        if not same.any():
            expected.append(0.0)
            continue
        a = distance[i, same].mean()
        b = min(distance[i, labels == other].mean() for other in set(labels) - {c})
        expected.append((b - a) / max(a, b))
    scores = separation_scores(features, labels, groups, k=1)
    assert scores["silhouette"] == pytest.approx(np.mean(expected))
    assert scores["silhouette_head"] == pytest.approx(np.mean(expected[:3]))
    assert scores["silhouette_tail"] == pytest.approx(0.0)


def test_separated_clusters_score_perfectly():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 10
    labels = np.repeat(np.arange(4), 25)
    features = centres[labels] + rng.normal(scale=0.1, size=(100, 8))
    scores = separation_scores(features, labels, ["head", "medium", "tail", "tail"], k=10)
    for group in ("", "_head", "_medium", "_tail"):
        assert scores[f"knn_purity{group}"] == 1.0
        assert scores[f"silhouette{group}"] > 0.95


def test_interleaved_classes_score_at_chance():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    labels = rng.permutation(np.repeat([0, 1], 200))
    scores = separation_scores(features, labels, ["head", "tail"], k=10)
    assert scores["knn_purity"] == pytest.approx(199 / 399, abs=0.05)  # chance: same-class share of the others
    assert abs(scores["silhouette"]) < 0.05


def test_separation_scores_reject_bad_input():
    features = points_at_angles([0, 10, 20, 30])
    with pytest.raises(ValueError, match="knn_k"):
        separation_scores(features, np.array([0, 0, 1, 1]), ["head", "tail"], k=4)
    with pytest.raises(ValueError, match="2 <= number of classes"):
        separation_scores(features, np.zeros(4, dtype=int), ["head", "tail"], k=1)
    with pytest.raises(ValueError, match="labels must lie"):
        separation_scores(features, np.array([0, 0, 1, 2]), ["head", "tail"], k=1)


# ---------------------------------------------------------------- bottleneck features

def test_bottleneck_features_match_manual_forward_at_tenth_of_T():
    model, diffusion = small_model(), Diffusion(T=1000)
    images, labels = toy_images()
    features = bottleneck_features(model, diffusion, images, labels, t_fraction=0.1, seed=3, inputs="noised")
    assert features.shape == (12, model.bottleneck_dim) and features.dtype == np.float32

    # Independent forward noising at t = 100 with float64 schedule maths.
    alphas_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[100]
    x0 = images.double() / 127.5 - 1
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3)).double()
    x_t = (math.sqrt(alphas_bar) * x0 + math.sqrt(1 - alphas_bar) * noise).float()
    with torch.no_grad():
        _, expected = model(x_t, torch.full((12,), 100), labels, return_bottleneck=True)
        _, other_t = model(x_t, torch.full((12,), 99), labels, return_bottleneck=True)
        _, no_labels = model(x_t, torch.full((12,), 100), torch.full((12,), -1), return_bottleneck=True)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(features, other_t.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(features, no_labels.numpy(), rtol=1e-4, atol=1e-5)


def test_clean_bottleneck_features_are_the_clean_image_with_the_time_embedding():
    """The released code's way (the default): no noise, only t = 0.1 T in the time embedding."""
    model, diffusion = small_model(), Diffusion(T=1000)
    images, labels = toy_images()
    features = bottleneck_features(model, diffusion, images, labels, t_fraction=0.1, seed=3)
    with torch.no_grad():
        _, expected = model((images.double() / 127.5 - 1).float(), torch.full((12,), 100), labels,
                            return_bottleneck=True)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)
    other_seed = bottleneck_features(model, diffusion, images, labels, t_fraction=0.1, seed=4)
    np.testing.assert_array_equal(features, other_seed)  # no noise: the seed plays no part
    with pytest.raises(ValueError, match="inputs: 'blurred'; allowed: clean, noised"):
        bottleneck_features(model, diffusion, images, labels, inputs="blurred")


def test_bottleneck_features_deterministic_per_seed_and_batch_size_free():
    model, diffusion = small_model(), Diffusion(T=50)
    images, labels = toy_images()
    model.train()
    first = bottleneck_features(model, diffusion, images, labels, t_fraction=0.1, seed=0, batch_size=256,
                                inputs="noised")
    again = bottleneck_features(model, diffusion, images, labels, t_fraction=0.1, seed=0, batch_size=5,
                                inputs="noised")
    other = bottleneck_features(model, diffusion, images, labels, t_fraction=0.1, seed=1, inputs="noised")
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, other)
    assert model.training  # the caller's mode is restored


def test_bottleneck_features_reject_float_images():
    with pytest.raises(ValueError, match="uint8"):
        bottleneck_features(small_model(), Diffusion(T=10), torch.zeros(2, 3, 8, 8), torch.zeros(2))


# ---------------------------------------------------------------- t-SNE and selection

def test_tsne_shape_determinism_and_small_n():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 6))
    first = tsne_embedding(features, seed=0, perplexity=30)  # capped below N
    assert first.shape == (12, 2) and first.dtype == np.float32
    np.testing.assert_allclose(first, tsne_embedding(features, seed=0, perplexity=30))


def test_select_per_class_counts_and_determinism():
    labels = np.array([0] * 6 + [1] * 6 + [2] * 2)
    chosen = select_per_class(labels, per_class=3, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [3, 3, 2]  # a smaller class gives all it has
    assert len(set(chosen.tolist())) == len(chosen)
    np.testing.assert_array_equal(chosen, select_per_class(labels, 3, seed=0))
    with pytest.raises(ValueError, match="per_class"):
        select_per_class(labels, 0, seed=0)


# ---------------------------------------------------------------- the latent stage

def test_run_latent_writes_features_and_scores_that_the_run_figure_draws(tmp_path, monkeypatch):
    class_names = [f"c{i}" for i in range(10)]
    images, labels = toy_images(n=60, seed=1)  # 6 balanced images per class
    run = {"setting": "toy", "dataset": "toy", "rho": 0.1, "method": "coral", "variant": "coral", "seed": 0}
    data_cfg = {"dataset": "toy", "image_size": 8, "subsample_seed": 0, "hflip": False}
    monkeypatch.setattr(latent, "load_model",
                        lambda checkpoint: (small_model(), Diffusion(T=100), {"run": run, "data": data_cfg}))
    np.savez(tmp_path / "reference.npz", images=images.numpy(), labels=labels.numpy(), class_names=np.array(class_names))
    counts = np.array([6, 6, 5, 5, 4, 3, 3, 2, 2, 1])
    np.savez(tmp_path / "split.npz", images=images.numpy()[:37], indices=np.arange(37),
             labels=np.repeat(np.arange(10), counts), class_counts=counts, class_names=np.array(class_names))
    cfg = LatentConfig(t_fraction=0.1, per_class=4, seed=0, perplexity=30, knn_k=3, batch_size=16, tsne_input="clean")
    out = {"out_npz": tmp_path / "features.npz", "out_json": tmp_path / "separation.json"}
    checkpoint = tmp_path / "final.pt"  # load_model is replaced; the file only feeds the lineage record
    checkpoint.write_bytes(b"stand-in checkpoint")
    run_latent(checkpoint, tmp_path / "split.npz", tmp_path / "reference.npz", cfg, **out)

    with np.load(out["out_npz"]) as z:
        assert z["features"].shape == (40, 64) and z["tsne"].shape == (40, 2)
        assert np.bincount(z["labels"]).tolist() == [4] * 10
        np.testing.assert_array_equal(labels.numpy()[z["indices"]], z["labels"])
        assert z["groups"].tolist() == ["head"] * 4 + ["medium"] * 3 + ["tail"] * 3
    scores = json.loads(out["out_json"].read_text())
    assert scores["run"] == run and scores["t"] == 10 and scores["num_points"] == 40
    assert 0 <= scores["knn_purity_tail"] <= 1 and -1 <= scores["silhouette"] <= 1
    # both inputs are scored; the t-SNE embeds the configured one (clean)
    assert scores["tsne_input"] == "clean" and -1 <= scores["noised_silhouette"] <= 1
    assert scores["noised_silhouette"] != scores["silhouette"]
    assert not list(tmp_path.glob("*.png"))  # the stage draws nothing
    # The figure rule draws the run from these two files alone: its title, classes and scores.
    panels = []
    original = figures.tsne_figure
    monkeypatch.setattr(figures, "tsne_figure", lambda p, *rest: panels.append(p) or original(p, *rest))
    figures.tsne_run_figure(out["out_npz"], out["out_json"], tmp_path / "figure" / "tsne.png")
    assert panels == [{"coral (toy, seed 0, t=10)": {"features": out["out_npz"], "separation": out["out_json"]}}]
    with Image.open(tmp_path / "figure" / "tsne.png") as picture:
        assert picture.format == "PNG" and picture.width > 100 and picture.height > 100
    lineage = json.loads((tmp_path / "separation.json.lineage.json").read_text())
    assert lineage["stage"] == "latent" and str(checkpoint) in lineage["inputs"]
