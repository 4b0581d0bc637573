"""Tests of coral.metrics and coral.classifier against independent expectations."""
import csv
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from coral.classifier import FEATURE_EXTRACTOR_NAME, load_classifier, predict_logits, train_classifier
from coral.data import load_reference, write_reference, write_split
from coral.metrics import compare_features, evaluate, max_f_beta, prd_curve, prd_scores

DATA_CFG = {"dataset": "animals", "image_size": 8, "subsample_seed": 0, "hflip": False}
CLF_CFG = {"steps": 30, "batch_size": 64, "lr": 2e-3, "width": 8, "test_fraction": 0.1, "seed": 0}
EVAL_CFG = {"feature_extractor": "classifier", "batch_size": 500, "prc_neighborhood": 5, "kid_subsets": 10,
            "kid_subset_size": 1000, "prd_clusters_per_class": 20, "prd_angles": 1001, "prd_runs": 2}


def _compare(gen, real):
    return compare_features(torch.as_tensor(gen, dtype=torch.float32), torch.as_tensor(real, dtype=torch.float32),
                            kid_subsets=5, kid_subset_size=100, prc_neighborhood=5)


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook FID: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s_a + s_b - 2 * covmean))


def test_fid_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(_compare(features, features)["fid"]) < 1e-3


def test_fid_matches_scipy_frechet_distance():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(600, 16)) @ rng.normal(size=(16, 16))
    gen = 1.3 * rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16)) + 0.5
    assert _compare(gen, real)["fid"] == pytest.approx(_scipy_frechet(gen, real), rel=1e-3)


def test_prd_curve_hand_case():
    # real puts half its mass on each of 2 bins, gen all on bin 0: precision = min(lambda/2, 1),
    # recall = min(1/2, 1/lambda). The curve's corner (p, r) = (1, 1/2) maximises both F scores:
    # F_8 = 65 * 0.5 / (64 + 0.5) and F_1/8 = (65/64) * 0.5 / (1/64 + 0.5).
    precision, recall = prd_curve(np.array([1.0, 0.0]), np.array([0.5, 0.5]), num_angles=1001)
    assert precision.max() == pytest.approx(1.0) and recall.max() == pytest.approx(0.5)
    assert max_f_beta(precision, recall, 8.0) == pytest.approx(32.5 / 64.5, abs=5e-3)
    assert max_f_beta(precision, recall, 1 / 8) == pytest.approx(32.5 / 33, abs=5e-3)


def _blobs(centres: np.ndarray, per_centre: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([c + 0.05 * rng.normal(size=(per_centre, centres.shape[1])) for c in centres])


def test_prd_identical_sets_score_one():
    features = _blobs(10 * np.eye(10), 50, seed=0)
    f8, f1_8 = prd_scores(features, features, num_clusters=10, num_runs=2)
    assert f8 == pytest.approx(1.0, abs=1e-3) and f1_8 == pytest.approx(1.0, abs=1e-3)


def test_prd_half_coverage_is_precise_but_not_recalled():
    # gen covers 5 of the 10 real modes: precision-like F_1/8 stays high, recall-like F_8 near 0.5
    centres = 10 * np.eye(10)
    real = _blobs(centres, 50, seed=0)
    gen = _blobs(centres[:5], 100, seed=1)
    f8, f1_8 = prd_scores(gen, real, num_clusters=10, num_runs=2)
    assert f8 == pytest.approx(32.5 / 64.5, abs=0.03)
    assert f1_8 > 0.95


@pytest.fixture(scope="module")
def reference_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "reference.npz"
    write_reference(DATA_CFG, path)
    return path


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory, reference_npz):
    out = tmp_path_factory.mktemp("classifier")
    train_classifier(reference_npz, CLF_CFG, False, out / "classifier.pt", out / "classifier.json")
    return out / "classifier.pt"


def test_registered_extractor_gives_feature_shapes(classifier_ckpt):
    from torch_fidelity.utils import create_feature_extractor
    extractor = create_feature_extractor(FEATURE_EXTRACTOR_NAME, ["penultimate", "logits"], cuda=False,
                                         feature_extractor_weights_path=str(classifier_ckpt), verbose=False)
    images = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    penultimate, logits = extractor(images)
    assert penultimate.shape == (7, 4 * CLF_CFG["width"]) and logits.shape == (7, 10)
    checkpoint = torch.load(classifier_ckpt, weights_only=True)
    assert checkpoint["image_size"] == 8 and 0.0 <= checkpoint["test_accuracy"] <= 1.0


def test_evaluate_end_to_end(classifier_ckpt, reference_npz, tmp_path):
    write_split(DATA_CFG, 0.1, tmp_path / "split.npz", tmp_path / "counts.csv")
    data = load_reference(reference_npz)
    picks = torch.cat([torch.nonzero(data.labels == c).flatten()[:20] for c in range(10)])
    images, labels = data.images[picks], data.labels[picks]
    meta = {"sampler": "ddim", "steps": 10, "run": {"dataset": "animals", "rho": 0.1, "method": "real", "seed": 0}}
    np.savez(tmp_path / "samples.npz", images=images.numpy(), labels=labels.numpy(), meta=np.array(json.dumps(meta)))

    result = evaluate(tmp_path / "samples.npz", reference_npz, tmp_path / "split.npz", classifier_ckpt, EVAL_CFG,
                      tmp_path / "metrics.json", tmp_path / "per_class.csv")

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["run"] == meta["run"] and written["sampling"] == {"sampler": "ddim", "steps": 10}
    assert "not comparable" in written["feature_extractor"]
    assert written["num_generated"] == 200 and written["num_real"] == 10000
    for key in ("fid", "isc_mean", "isc_std", "kid_mean", "kid_std", "precision", "recall", "prd_f8",
                "prd_f1_8", "accuracy"):
        assert math.isfinite(written["overall"][key]), key
    assert set(written["groups"]) == {"head", "medium", "tail"}
    assert all(math.isfinite(v) for g in written["groups"].values() for v in g.values())
    expected_accuracy = (predict_logits(load_classifier(classifier_ckpt), images).argmax(1) == labels).float().mean()
    assert result["overall"]["accuracy"] == pytest.approx(float(expected_accuracy), abs=1e-6)

    with open(tmp_path / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and [int(r["num_generated"]) for r in rows] == [20] * 10
    assert [r["group"] for r in rows] == ["head"] * 4 + ["medium"] * 3 + ["tail"] * 3
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("fid", "kid_mean", "precision", "recall"))


def test_evaluate_rejects_unknown_feature_extractor(tmp_path):
    with pytest.raises(ValueError, match="eval.feature_extractor"):
        evaluate(tmp_path / "s.npz", tmp_path / "r.npz", tmp_path / "split.npz", tmp_path / "c.pt",
                 {**EVAL_CFG, "feature_extractor": "vgg16"}, tmp_path / "m.json", tmp_path / "p.csv")
