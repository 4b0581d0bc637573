"""Tests of coral.fidelity, coral.metrics and coral.classifier against independent expectations."""
import csv
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

import coral.fidelity as fidelity
from coral.lineage import DamagedArtifact
from coral.classifier import FEATURE_EXTRACTOR_NAME, load_classifier, predict_logits, train_classifier
from coral.data import load_reference, write_reference, write_split
from coral.fidelity import (class_frechet_distances, frechet_distance, kernel_distance, kmeans_labels, max_f_beta,
                            prd_curve, prd_scores, precision_recall, reference_halves)
from coral.metrics import evaluate, prd_num_clusters, write_reference_features
from coral.sections import ClassifierConfig, EvaluateConfig
from coral.tables import main_table, per_class_table

DATA_CFG = {"dataset": "animals", "image_size": 8, "subsample_seed": 0, "hflip": False, "training_set": "long_tailed"}
CLF_CFG = ClassifierConfig(steps=30, batch_size=64, lr=2e-3, width=8, test_fraction=0.1, seed=0, checkpoint_every=500)
EVAL_CFG = EvaluateConfig(feature_extractor="classifier", inception_weights_path=None, inception_download=False,
                          batch_size=500, prc_neighborhood=5, kid_subsets=10, kid_subset_size=1000, prd_clusters_per_class=20,
                          prd_max_clusters=1000, prd_kmeans_steps=20, prd_angles=1001, prd_runs=2)


# ---------------------------------------------------------------- FID

def _torch_fidelity_fid(a: np.ndarray, b: np.ndarray) -> float:
    stats = [fid_features_to_statistics(torch.as_tensor(x, dtype=torch.float64)) for x in (a, b)]
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook FID: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), in float64."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real))


def _correlated(rng, n: int, dims: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return scale * rng.normal(size=(n, dims)) @ rng.normal(size=(dims, dims)) + shift


# (n_gen, n_real) with D = 16: both below D, both equal to D, both above, n1 != n2 on either side of D
@pytest.mark.parametrize("n_gen,n_real", [(5, 5), (7, 11), (16, 16), (40, 60), (5, 40), (40, 5), (16, 3)])
def test_fid_matches_torch_fidelity_and_scipy(n_gen, n_real):
    rng = np.random.default_rng(n_gen * 100 + n_real)
    gen, real = _correlated(rng, n_gen, 16, 1.3, 0.5), _correlated(rng, n_real, 16)
    ours = frechet_distance(torch.from_numpy(gen), torch.from_numpy(real))
    assert ours == pytest.approx(_torch_fidelity_fid(gen, real), rel=1e-6)
    assert ours == pytest.approx(_scipy_frechet(gen, real), rel=1e-6)


@pytest.mark.parametrize("n", [4, 16, 50])
def test_fid_of_a_set_with_itself_is_zero(n):
    features = torch.from_numpy(_correlated(np.random.default_rng(0), n, 16))
    assert abs(frechet_distance(features, features)) < 1e-8 * float(features.var(0).sum())


def test_class_fids_match_torch_fidelity_class_by_class(monkeypatch):
    # classes of several sizes (some sharing a shape, so stacked), split over several batches
    monkeypatch.setattr(fidelity, "FID_BATCH_ELEMENTS", 600)
    rng = np.random.default_rng(3)
    gen_counts, real_counts = [4, 4, 4, 20, 20, 9], [6, 6, 6, 30, 12, 9]
    gen_labels = np.repeat(np.arange(6), gen_counts)
    real_labels = np.repeat(np.arange(6), real_counts)
    gen = _correlated(rng, len(gen_labels), 8, 1.2, 0.3)
    real = _correlated(rng, len(real_labels), 8)
    order_gen, order_real = rng.permutation(len(gen)), rng.permutation(len(real))  # labels need not be sorted
    gen, gen_labels = gen[order_gen], gen_labels[order_gen]
    real, real_labels = real[order_real], real_labels[order_real]
    fids = class_frechet_distances(torch.from_numpy(gen).float(), torch.from_numpy(gen_labels),
                                   torch.from_numpy(real).float(), torch.from_numpy(real_labels), 6)
    gen32, real32 = gen.astype(np.float32).astype(np.float64), real.astype(np.float32).astype(np.float64)
    expected = [_torch_fidelity_fid(gen32[gen_labels == c], real32[real_labels == c]) for c in range(6)]
    assert fids == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- KID

def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2 with k(a, b) = (a.b / D + 1)^3: off-diagonal means of K_xx and K_yy, minus twice the mean of K_xy."""
    def kernel(a, b):
        return (a @ b.T / x.shape[1] + 1) ** 3
    m = len(x)
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    return float((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                 - 2 * kernel(x, y).mean())


def test_kid_of_whole_sets_is_one_mmd_without_a_spread():
    rng = np.random.default_rng(4)
    gen, real = rng.normal(size=(30, 12)) + 0.3, rng.normal(size=(30, 12))
    gen_t, real_t = torch.from_numpy(gen).float(), torch.from_numpy(real).float()
    mean, std = kernel_distance(gen_t, real_t, subsets=10, subset_size=1000)
    fidelity = kid_features_to_metric(gen_t, real_t, kid_subsets=10, kid_subset_size=30, verbose=False)
    assert std is None and fidelity[KEY_METRIC_KID_STD] < 1e-5  # torch-fidelity's "spread" is rounding
    assert mean == pytest.approx(fidelity[KEY_METRIC_KID_MEAN], rel=1e-4)
    assert mean == pytest.approx(_unbiased_mmd2(gen.astype(np.float32).astype(np.float64),
                                                real.astype(np.float32).astype(np.float64)), rel=1e-4)


def test_kid_over_distinct_subsets_is_torch_fidelity():
    rng = np.random.default_rng(5)
    gen, real = torch.randn(50, 12) + 0.2, torch.from_numpy(rng.normal(size=(80, 12))).float()
    mean, std = kernel_distance(gen, real, subsets=10, subset_size=1000)  # subsets of 50: real ones differ
    fidelity = kid_features_to_metric(gen, real, kid_subsets=10, kid_subset_size=50, verbose=False)
    assert (mean, std) == (fidelity[KEY_METRIC_KID_MEAN], fidelity[KEY_METRIC_KID_STD]) and std > 1e-4
    assert kernel_distance(gen, real, subsets=1, subset_size=20)[1] is None  # one subset: no spread


# ---------------------------------------------------------------- precision / recall

@pytest.mark.parametrize("n_gen,n_real,k", [(70, 45, 5), (45, 70, 3), (33, 33, 1), (40, 40, 5)])
def test_precision_recall_equals_torch_fidelity(monkeypatch, n_gen, n_real, k):
    monkeypatch.setattr(fidelity, "DISTANCE_BLOCK", 16)  # several blocks, the last one partial
    rng = np.random.default_rng(n_gen + n_real + k)
    centres = 3 * rng.normal(size=(6, 8))
    gen = torch.tensor(centres[rng.integers(0, 6, n_gen)] + rng.normal(size=(n_gen, 8)), dtype=torch.float32)
    real = torch.tensor(centres[rng.integers(0, 4, n_real)] + 0.7 * rng.normal(size=(n_real, 8)), dtype=torch.float32)
    theirs = prc_features_to_metric(gen, real, prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=False,
                                    verbose=False)
    precision, recall = precision_recall(gen, real, k)
    assert (precision, recall) == (theirs[KEY_METRIC_PRECISION], theirs[KEY_METRIC_RECALL])
    assert 0 < precision < 1  # a case where the balls matter


# ---------------------------------------------------------------- PRD

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


def test_kmeans_finds_separated_blobs():
    points = torch.from_numpy(_blobs(10 * np.eye(10), 40, seed=2)).float()
    truth = np.repeat(np.arange(10), 40)
    for seed in range(5):
        labels = kmeans_labels(points, 10, steps=5, generator=torch.Generator().manual_seed(seed)).numpy()
        # the same partition as the blobs: each blob one cluster, each cluster one blob
        assert len(set(zip(truth, labels))) == 10 and len(set(labels)) == 10


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


def test_prd_clusters_are_capped():
    assert prd_num_clusters(EVAL_CFG, 10) == 200
    assert prd_num_clusters(EVAL_CFG, 1000) == 1000  # 20 x 1000 capped at prd_max_clusters


# ---------------------------------------------------------------- evaluate end to end

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


@pytest.fixture(scope="module")
def reference_features(tmp_path_factory, reference_npz, classifier_ckpt):
    path = tmp_path_factory.mktemp("features") / "reference.npz"
    write_reference_features(reference_npz, classifier_ckpt, EVAL_CFG, path)
    return path


def test_registered_extractor_gives_feature_shapes(classifier_ckpt):
    from torch_fidelity.utils import create_feature_extractor
    extractor = create_feature_extractor(FEATURE_EXTRACTOR_NAME, ["penultimate", "logits"], cuda=False,
                                         feature_extractor_weights_path=str(classifier_ckpt), verbose=False)
    images = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    penultimate, logits = extractor(images)
    assert penultimate.shape == (7, 4 * CLF_CFG.width) and logits.shape == (7, 10)
    checkpoint = torch.load(classifier_ckpt, weights_only=True)
    assert checkpoint["image_size"] == 8 and 0.0 <= checkpoint["test_accuracy"] <= 1.0


def test_reference_features_are_the_extractors_features(reference_npz, classifier_ckpt, reference_features):
    data = load_reference(reference_npz)
    with np.load(reference_features) as z:
        features, labels, meta = z["features"], z["labels"], json.loads(str(z["meta"]))
    picks = [0, 1234, 9999]
    from torch_fidelity.utils import create_feature_extractor
    extractor = create_feature_extractor(FEATURE_EXTRACTOR_NAME, ["penultimate"], cuda=False,
                                         feature_extractor_weights_path=str(classifier_ckpt), verbose=False)
    expected = extractor(data.images[picks])[0].numpy()
    assert features.shape == (10000, 4 * CLF_CFG.width) and (labels == data.labels.numpy()).all()
    np.testing.assert_allclose(features[picks], expected, rtol=1e-5, atol=1e-5)
    assert meta["feature_extractor"] == "classifier" and meta["layer"] == "penultimate"
    assert (reference_features.parent / "reference.npz.lineage.json").exists()


def _samples(path, images, labels):
    meta = {"sampler": "ddim", "steps": 10, "eta": 0.0, "omega": 1.0, "num_samples": len(labels),
            "run": {"dataset": "animals", "rho": 0.1, "method": "real", "variant": "real", "seed": 0}}
    np.savez(path, images=images.numpy(), labels=labels.numpy(), meta=np.array(json.dumps(meta)))
    return meta


def test_evaluate_end_to_end(classifier_ckpt, reference_npz, reference_features, tmp_path):
    write_split(DATA_CFG, 0.1, tmp_path / "split.npz", tmp_path / "counts.csv")
    data = load_reference(reference_npz)
    picks = torch.cat([torch.nonzero(data.labels == c).flatten()[:20] for c in range(10)])
    images, labels = data.images[picks], data.labels[picks]
    meta = _samples(tmp_path / "samples.npz", images, labels)

    result = evaluate(tmp_path / "samples.npz", reference_features, tmp_path / "split.npz", classifier_ckpt, EVAL_CFG,
                      tmp_path / "metrics.json", tmp_path / "per_class.csv")

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["run"] == meta["run"] and written["sampling"] == {k: v for k, v in meta.items() if k != "run"}
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
    # 20 generated vs 1000 real images per class: KID's subsets differ, so its spread is reported
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("fid", "kid_mean", "kid_std", "precision", "recall"))


def test_whole_class_kid_has_no_spread_and_tables_read_it(classifier_ckpt, reference_npz, tmp_path):
    # a reference of 30 images per class and those same images as samples: every class is compared whole
    data = load_reference(reference_npz)
    picks = torch.cat([torch.nonzero(data.labels == c).flatten()[:30] for c in range(10)])
    np.savez(tmp_path / "reference.npz", images=data.images[picks].numpy(), labels=data.labels[picks].numpy(),
             class_names=np.array(data.class_names))
    write_reference_features(tmp_path / "reference.npz", classifier_ckpt, EVAL_CFG, tmp_path / "features.npz")
    write_split(DATA_CFG, 0.1, tmp_path / "split.npz", tmp_path / "counts.csv")
    _samples(tmp_path / "samples.npz", data.images[picks], data.labels[picks])

    result = evaluate(tmp_path / "samples.npz", tmp_path / "features.npz", tmp_path / "split.npz", classifier_ckpt,
                      EVAL_CFG, tmp_path / "metrics.json", tmp_path / "per_class.csv")

    assert result["overall"]["kid_std"] is None  # 300 vs 300 images, subsets of 300
    assert json.loads((tmp_path / "metrics.json").read_text())["overall"]["kid_std"] is None
    with open(tmp_path / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["kid_std"] for r in rows] == [""] * 10
    # the samples are the reference: FID 0 and precision = recall = 1 in every class
    assert all(abs(float(r["fid"])) < 1e-6 and float(r["precision"]) == float(r["recall"]) == 1.0 for r in rows)
    table = per_class_table({tmp_path / "per_class.csv": tmp_path / "metrics.json"}, None)
    assert len(table) == 10 and np.isfinite(table["kid_mean"]).all()
    # the FIDs against the reference's halves, by torch-fidelity on the same features (samples = reference)
    features = torch.from_numpy(np.load(tmp_path / "features.npz")["features"]).double()
    selection, report = reference_halves(data.labels[picks], 10)
    halves = result["reference_halves"]
    for name, half in (("selection_fid", selection), ("report_fid", report)):
        expected = fid_statistics_to_metric(fid_features_to_statistics(features),
                                            fid_features_to_statistics(features[half]), False)[KEY_METRIC_FID]
        assert halves[name] == pytest.approx(expected, rel=1e-4, abs=1e-6), name
    main = main_table([tmp_path / "metrics.json"], tmp_path / "main.csv")
    assert np.isfinite(main[["kid_mean", "tail_kid_mean", "fid_mean"]].to_numpy(dtype=float)).all()


def test_evaluate_rejects_features_of_other_weights(classifier_ckpt, reference_features, tmp_path):
    other = tmp_path / "other.pt"
    checkpoint = torch.load(classifier_ckpt, weights_only=True)
    torch.save({**checkpoint, "test_accuracy": 0.5}, other)
    with pytest.raises(DamagedArtifact, match="rule reference_features"):
        evaluate(tmp_path / "s.npz", reference_features, tmp_path / "split.npz", other, EVAL_CFG,
                 tmp_path / "m.json", tmp_path / "p.csv")



def test_reference_halves_split_every_class_in_two():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    selection, report = reference_halves(labels, 3)
    assert sorted(torch.cat([selection, report]).tolist()) == list(range(6))  # disjoint, every image once
    assert torch.bincount(labels[selection], minlength=3).tolist() == [1, 1, 0]  # floor(n/2) of each class
    assert torch.bincount(labels[report], minlength=3).tolist() == [2, 1, 1]
    again = reference_halves(labels, 3)
    assert torch.equal(again[0], selection) and torch.equal(again[1], report)  # fixed by the seed
