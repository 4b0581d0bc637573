"""Classifier training: device placement, augmentation, no per-step host sync, checkpoints and resume."""
import dataclasses
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import coral.classifier as classifier_module
from coral.checkpoint import is_intact
from coral.classifier import _augment, load_classifier_checkpoint, train_classifier
from coral.sections import ClassifierConfig
from coral.tensors import default_device

CFG = ClassifierConfig(steps=12, batch_size=16, lr=2e-3, width=8, test_fraction=0.1, seed=0, checkpoint_every=4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """160 grey 8x8 images of 4 classes, each class a brightness level plus noise."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 40)
    images = np.clip(labels[:, None, None, None] * 60 + rng.normal(30, 20, (160, 1, 8, 8)), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("reference") / "reference.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c", "d"]))
    return path


@pytest.fixture(scope="module")
def uninterrupted(reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train_classifier(reference, CFG, True, out / "classifier.pt", out / "classifier.json")
    return load_classifier_checkpoint(out / "classifier.pt")


def _assert_same_weights(expected: dict, actual: dict) -> None:
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, actual["state_dict"][name]), f"{name} differs"


def _count_steps(monkeypatch, crash_at: int | None = None) -> dict:
    """Wrap the training step: count its calls, record where its inputs live, optionally crash."""
    seen = {"calls": 0, "devices": set()}
    original = classifier_module._train_step

    def step(model, optimizer, images, labels, hflip):
        seen["calls"] += 1
        if seen["calls"] == crash_at:
            raise KeyboardInterrupt
        seen["devices"] |= {p.device for p in model.parameters()} | {images.device, labels.device}
        seen["dtype"] = images.dtype
        return original(model, optimizer, images, labels, hflip)

    monkeypatch.setattr(classifier_module, "_train_step", step)
    return seen


def _crop(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image shifted by (dy, dx) with replicated edges: a crop of its edge-padded copy."""
    h, w = image.shape[-2:]
    s = max(abs(dy), abs(dx))
    padded = F.pad(image[None].float(), (s, s, s, s), mode="replicate")[0]
    return padded[:, s + dy:s + dy + h, s + dx:s + dx + w]


@pytest.mark.parametrize("hflip", [False, True])
def test_augment_is_an_edge_replicated_shift_and_maybe_a_flip(hflip):
    torch.manual_seed(0)
    images = torch.arange(64 * 2 * 16 * 16).reshape(64, 2, 16, 16)  # every pixel distinct
    out = _augment(images, hflip)
    assert out.shape == images.shape and out.dtype == images.dtype
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]  # up to 16 // 8 pixels
    flips = [False, True] if hflip else [False]
    found = []
    for image, augmented in zip(images, out):
        matches = [(flip, shift) for flip in flips for shift in shifts
                   if torch.equal(_crop(image, *shift).flip(-1) if flip else _crop(image, *shift), augmented.float())]
        assert len(matches) == 1
        found.append(matches[0])
    assert {flip for flip, _ in found} == set(flips)
    assert len({shift for _, shift in found}) > 10  # shifts vary over the batch


def test_trains_on_the_default_device_and_writes_the_classifier(reference, tmp_path, monkeypatch):
    seen = _count_steps(monkeypatch)
    train_classifier(reference, CFG, True, tmp_path / "classifier.pt", tmp_path / "classifier.json")
    assert seen["calls"] == CFG.steps
    assert {d.type for d in seen["devices"]} == {default_device().type} and seen["dtype"] == torch.uint8
    checkpoint = torch.load(tmp_path / "classifier.pt", weights_only=True)  # the format other modules read
    assert {"state_dict", "in_channels", "num_classes", "width", "image_size", "class_names",
            "test_accuracy"} <= set(checkpoint)
    assert checkpoint["image_size"] == 8 and checkpoint["class_names"] == ["a", "b", "c", "d"]
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())
    assert is_intact(tmp_path / "classifier.pt")
    assert not (tmp_path / "checkpoints").exists()  # step checkpoints pruned after the final file


def test_no_host_sync_between_progress_updates(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(classifier_module, "PROGRESS_EVERY", 5)
    seen = _count_steps(monkeypatch)
    synced_after: list[int] = []  # steps done whenever a value was read back to the host

    class RecordHostReads(TorchDispatchMode):
        """.item(), float(), bool(), and (on a GPU) copies to the CPU."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            to_cpu = func is torch.ops.aten._to_copy.default and args[0].device.type != "cpu" and \
                torch.device(kwargs.get("device") or args[0].device).type == "cpu"
            if func is torch.ops.aten._local_scalar_dense.default or to_cpu:
                synced_after.append(seen["calls"])
            return func(*args, **kwargs)

    for method in ("tolist", "numpy"):  # these read CPU tensors without dispatching an op
        def reading(tensor, *args, _original=getattr(torch.Tensor, method), **kwargs):
            synced_after.append(seen["calls"])
            return _original(tensor, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, method, reading)

    cfg = dataclasses.replace(CFG, checkpoint_every=100)
    with RecordHostReads():
        train_classifier(reference, cfg, True, tmp_path / "classifier.pt", tmp_path / "classifier.json")
    assert 5 in synced_after and 10 in synced_after  # the progress updates are seen ...
    assert set(synced_after) <= {0, 5, 10, 12}  # ... and nothing else between the setup and the end


def test_interrupted_run_resumes_to_identical_weights(reference, uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "classifier.pt"
    _count_steps(monkeypatch, crash_at=7)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(reference, CFG, True, out, tmp_path / "classifier.json")
    assert not out.exists() and (tmp_path / "checkpoints" / "step-00000004.pt").exists()
    seen = _count_steps(monkeypatch)
    train_classifier(reference, CFG, True, out, tmp_path / "classifier.json")
    assert seen["calls"] == CFG.steps - 4
    _assert_same_weights(uninterrupted, load_classifier_checkpoint(out))
    assert not (tmp_path / "checkpoints").exists()


def test_damaged_newest_checkpoint_falls_back_to_the_previous(reference, uninterrupted, tmp_path, monkeypatch,
                                                              caplog):
    out = tmp_path / "classifier.pt"
    _count_steps(monkeypatch, crash_at=11)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(reference, CFG, True, out, tmp_path / "classifier.json")
    newest = tmp_path / "checkpoints" / "step-00000008.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    seen = _count_steps(monkeypatch)
    with caplog.at_level("WARNING"):
        train_classifier(reference, CFG, True, out, tmp_path / "classifier.json")
    assert "step-00000008.pt does not match its checksum" in caplog.text
    assert seen["calls"] == CFG.steps - 4  # resumed from step 4
    _assert_same_weights(uninterrupted, load_classifier_checkpoint(out))


def test_checkpoints_of_another_config_are_set_aside_and_taken_back(reference, uninterrupted, tmp_path, monkeypatch):
    """Another config trains from step 0, keeping the first config's step checkpoints aside; the first
    config, run again, takes them back and resumes to the weights of an uninterrupted run."""
    other = dataclasses.replace(CFG, lr=1e-2)
    fresh = tmp_path / "fresh"
    train_classifier(reference, other, True, fresh / "classifier.pt", fresh / "classifier.json")
    _count_steps(monkeypatch, crash_at=7)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(reference, CFG, True, tmp_path / "classifier.pt", tmp_path / "classifier.json")  # step 4
    seen = _count_steps(monkeypatch)
    train_classifier(reference, other, True, tmp_path / "classifier.pt", tmp_path / "classifier.json")
    assert seen["calls"] == CFG.steps  # from step 0
    _assert_same_weights(load_classifier_checkpoint(fresh / "classifier.pt"),
                         load_classifier_checkpoint(tmp_path / "classifier.pt"))
    seen = _count_steps(monkeypatch)
    train_classifier(reference, CFG, True, tmp_path / "classifier.pt", tmp_path / "classifier.json")
    assert seen["calls"] == CFG.steps - 4  # resumed from the step checkpoint set aside
    _assert_same_weights(uninterrupted, load_classifier_checkpoint(tmp_path / "classifier.pt"))


@pytest.mark.slow  # trains in a subprocess, killed and rerun
def test_sigkill_mid_run_then_rerun_gives_identical_weights(reference, tmp_path):
    """`coral train-classifier` killed with SIGKILL and started again ends with the uninterrupted weights."""
    cfg = dataclasses.replace(CFG, steps=600, checkpoint_every=25)
    whole = tmp_path / "whole"
    train_classifier(reference, cfg, False, whole / "classifier.pt", whole / "classifier.json")

    config = tmp_path / "config.yaml"  # the smoke preset with this test's classifier
    config.write_text(open("config.yaml").read() + "\n".join([
        "", "  smoke_classifier:", "    data: {image_size: 8, hflip: false, settings: [{dataset: animals, rho: 0.1}]}",
        "    classifier: {" + ", ".join(f"{k}: {v}" for k, v in cfg.as_dict().items()) + "}", ""]))
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "coral", "train-classifier", "--config", str(config),
               "--preset", "smoke_classifier", "--threads", "1", "--reference", str(reference),
               "--out-checkpoint", str(killed / "classifier.pt"), "--out-json", str(killed / "classifier.json")]
    process = subprocess.Popen(command)
    deadline = time.time() + 120
    while not list((killed / "checkpoints").glob("step-00000050.pt*")) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "classifier.pt").exists(), "the run finished before it could be killed"
    subprocess.run(command, check=True)
    _assert_same_weights(load_classifier_checkpoint(whole / "classifier.pt"),
                         load_classifier_checkpoint(killed / "classifier.pt"))
