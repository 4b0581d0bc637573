"""A small CNN classifier: the evaluation feature extractor of small presets (docs/method.md §6).

It is trained on the full balanced dataset. Its penultimate features replace Inception pool3 for
FID/KID/precision-recall/PRD and its logits replace Inception logits for IS, so its numbers are
not comparable with Inception FID. Importing this module registers it with torch-fidelity as
"coral-classifier".
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from coral import checkpoint, identity, lineage, reuse
from coral.data import load_reference
from coral.io import provenance, sha256_file, write_json
from coral.progress import Progress
from coral.sections import ClassifierConfig
from coral.tensors import default_device, uint8_to_unit
from coral.batches import DeviceBatches

log = logging.getLogger(__name__)

FEATURE_EXTRACTOR_NAME = "coral-classifier"
PROGRESS_EVERY = 50  # steps between progress-bar loss updates, the only host syncs of the loop
_KEEP_CHECKPOINTS = 2  # step checkpoints kept while training: the newest may be damaged
_CHECKPOINT_KEYS = ("state_dict", "in_channels", "num_classes", "width", "image_size", "class_names",
                    "test_accuracy")
_GROUPS = 8  # GroupNorm groups; every channel count is a multiple of it


class _ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_GROUPS, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_GROUPS, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class SmallClassifier(nn.Module):
    """Three residual stages (width, 2*width, 4*width channels; stride-2 convs between them),
    global average pooling to a `feature_dim = 4*width` penultimate feature, then a linear layer.

    Input: float images (B, in_channels, H, W) in [-1, 1], any square H >= 4.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        if width <= 0 or width % _GROUPS:
            raise ValueError(f"classifier.width: got {width}; allowed: a positive multiple of {_GROUPS}")
        self.in_channels, self.num_classes, self.width = in_channels, num_classes, width
        channels = [width, 2 * width, 4 * width]
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        stages: list[nn.Module] = [_ResBlock(width)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            stages += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _ResBlock(c_out)]
        self.stages = nn.Sequential(*stages)
        self.norm = nn.GroupNorm(_GROUPS, channels[-1])
        self.head = nn.Linear(channels[-1], num_classes)
        self.feature_dim = channels[-1]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [-1, 1] -> (penultimate (B, feature_dim), logits (B, num_classes))."""
        h = F.silu(self.norm(self.stages(self.stem(x))))
        penultimate = h.mean(dim=(2, 3))
        return penultimate, self.head(penultimate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> logits (B, num_classes)."""
        return self.features(x)[1]


@torch.no_grad()
def predict_logits(model: SmallClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits (N, num_classes) of uint8 images (N, C, H, W), computed in batches on the model's device."""
    device = next(model.parameters()).device
    return torch.cat([model(uint8_to_unit(batch.to(device))).cpu() for batch in images.split(batch_size)])


def _augment(images: torch.Tensor, hflip: bool) -> torch.Tensor:
    """Random translation by up to H//8 pixels (edge-replicated), and a random horizontal flip if `hflip`.

    images: (B, C, H, W) of any dtype; one gather on their device, with no host synchronisation.
    """
    b, _, h, w = images.shape
    shift = max(1, h // 8)
    device = images.device
    dy, dx = torch.randint(-shift, shift + 1, (2, b, 1), device=device).unbind(0)
    cols = torch.arange(w, device=device).expand(b, w)
    if hflip:
        flip = torch.rand(b, 1, device=device) < 0.5
        cols = torch.where(flip, w - 1 - cols, cols)
    # Clamping the shifted coordinates to the image replicates its edges.
    rows = (torch.arange(h, device=device) + dy).clamp(0, h - 1)  # (B, H)
    cols = (cols + dx).clamp(0, w - 1)  # (B, W)
    out = images[torch.arange(b, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # advanced indexing put the channel axis last


def _train_step(model: SmallClassifier, optimizer: torch.optim.Optimizer, images_uint8: torch.Tensor,
                labels: torch.Tensor, hflip: bool) -> torch.Tensor:
    """One Adam step on a uint8 batch; returns the loss, left on the device."""
    loss = F.cross_entropy(model(uint8_to_unit(_augment(images_uint8, hflip))), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@contextlib.contextmanager
def _deterministic_cudnn() -> Iterator[None]:
    """Deterministic cuDNN kernels, so that a resumed run reproduces an uninterrupted one bit for bit."""
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def train_classifier(reference_npz: str | Path, clf_cfg: ClassifierConfig, hflip: bool, out_ckpt: str | Path,
                     out_json: str | Path) -> None:
    """Train SmallClassifier on the balanced reference set minus a stratified held-out test part
    (random horizontal flips when `hflip`), on the GPU when there is one.

    Saves step checkpoints to `out_ckpt`'s folder/checkpoints every classifier.checkpoint_every
    steps and resumes from the newest intact one, to the weights of an uninterrupted run; they are
    removed once the classifier is written. Writes a checkpoint (readable with
    torch.load(weights_only=True), with a .sha256 sidecar) holding the state dict, the constructor
    arguments, image_size, class_names and test_accuracy, and a JSON summary.
    """
    out_ckpt, hflip = Path(out_ckpt), bool(hflip)
    clf_identity = identity.classifier(clf_cfg.as_dict(), hflip)
    if reuse.restore([out_ckpt, out_json], clf_identity, [reference_npz]):
        return
    steps, batch_size, seed = clf_cfg.steps, clf_cfg.batch_size, clf_cfg.seed
    device = default_device()
    data = load_reference(reference_npz)
    labels = data.labels.numpy()
    from sklearn.model_selection import train_test_split  # a second to import: only in the training job
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=clf_cfg.test_fraction,
                                           stratify=labels, random_state=seed)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    if len(train_idx) < batch_size:
        raise ValueError(f"classifier.batch_size: {batch_size} exceeds the {len(train_idx)} training images")
    x_train = data.images[train_idx].to(device)  # uint8, resident
    y_train = data.labels[train_idx].to(device)

    torch.manual_seed(seed)
    model = SmallClassifier(data.images.shape[1], data.num_classes, clf_cfg.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=clf_cfg.lr, fused=True)  # fused: no per-step .item()

    # What the step checkpoints continue: resuming any other training would silently mix two.
    inputs = {"reference": sha256_file(reference_npz)}
    folder = out_ckpt.parent / "checkpoints"
    start = 0
    resumed = checkpoint.resume_point(folder, clf_identity, inputs,
                                      lambda state: identity.of_checkpoint("train_classifier", state))
    if resumed:
        path, state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.restore_rng(state, device)
        start = state["step"]
        log.info("resuming the classifier %s from step %d (%s)", out_ckpt, start, path.name)

    def snapshot(step: int) -> dict:
        return {"step": step, "identity": clf_identity, "inputs": inputs, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **checkpoint.rng_states(device)}

    model.train()
    batches = DeviceBatches(len(x_train), batch_size, seed, device)  # stateless in the step
    loss_sum, summed = torch.zeros((), device=device), 0
    with _deterministic_cudnn():
        progress = Progress(range(start, steps), initial=start, total=steps, desc=f"classifier {out_ckpt}", unit="step")
        for step in progress:
            idx = batches(step)
            loss_sum += _train_step(model, optimizer, x_train[idx], y_train[idx], hflip)
            summed += 1
            done = step + 1
            if done % PROGRESS_EVERY == 0 or done == steps:
                progress.set_postfix(loss=f"{float(loss_sum) / summed:.3f}", refresh=False)
                loss_sum, summed = torch.zeros((), device=device), 0
            if done % clf_cfg.checkpoint_every == 0 and done < steps:
                checkpoint.save(checkpoint.step_path(folder, done), snapshot(done))
                checkpoint.prune(folder, _KEEP_CHECKPOINTS)
    model.eval()

    def accuracy(idx: torch.Tensor) -> float:
        predicted = predict_logits(model, data.images[idx]).argmax(dim=1)
        return float((predicted == data.labels[idx]).float().mean())

    train_accuracy, test_accuracy = accuracy(train_idx), accuracy(test_idx)
    save_classifier(out_ckpt, model, int(data.images.shape[-1]), list(data.class_names), test_accuracy)
    write_json(out_json, {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy,
                          "num_train": len(train_idx), "num_test": len(test_idx),
                          "steps": steps, "provenance": provenance()})
    checkpoint.prune(folder, 0)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    lineage.record([out_ckpt, out_json], "train_classifier", [reference_npz],
                   {"hflip": hflip, "classifier": clf_cfg.as_dict()}, clf_identity)
    reuse.keep([out_ckpt, out_json], clf_identity)


def save_classifier(path: str | Path, model: SmallClassifier, image_size: int, class_names: list[str],
                    test_accuracy: float) -> None:
    """The classifier checkpoint (with its .sha256): weights on the CPU, the constructor arguments,
    image_size, class_names and the held-out accuracy; load_classifier_checkpoint reads it."""
    state_dict = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    checkpoint.save(Path(path), {"state_dict": state_dict, "in_channels": model.in_channels,
                                 "num_classes": model.num_classes, "width": model.width, "image_size": image_size,
                                 "class_names": class_names, "test_accuracy": test_accuracy})


def load_classifier_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict written by train_classifier (tensors on the CPU)."""
    with lineage.reading(path, "the classifier", "train_classifier"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in _CHECKPOINT_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a coral classifier checkpoint, missing keys {missing}")
    return checkpoint


def _classifier_from_checkpoint(checkpoint: dict) -> SmallClassifier:
    model = SmallClassifier(checkpoint["in_channels"], checkpoint["num_classes"], checkpoint["width"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_classifier(path: str | Path) -> SmallClassifier:
    """The trained SmallClassifier of a checkpoint, in eval mode on the CPU."""
    return _classifier_from_checkpoint(load_classifier_checkpoint(path))


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor around a trained SmallClassifier.

    Takes uint8 images (B, C, H, W) with C and H as the classifier was trained on and provides
    "penultimate" (B, feature_dim) for FID/KID/PRC and "logits" (B, num_classes) for IS
    (torch-fidelity applies the softmax itself).
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"feature extractor {name!r} needs feature_extractor_weights_path "
                             "= the classifier checkpoint written by train_classifier")
        checkpoint = load_classifier_checkpoint(feature_extractor_weights_path)
        self.image_size = checkpoint["image_size"]
        self.model = _classifier_from_checkpoint(checkpoint)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "penultimate", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "penultimate", "kid": "penultimate", "prc": "penultimate"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False  # channel count is only known from the checkpoint, so no static dummy input

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"{self.name}: expected uint8 images (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
        expected = (self.model.stem.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.name}: expected images of shape (B, {', '.join(map(str, expected))}) "
                             f"as the classifier was trained on, got {tuple(x.shape)}")
        penultimate, logits = self.model.features(uint8_to_unit(x))
        features = {"penultimate": penultimate, "logits": logits}
        return tuple(features[name] for name in self.features_list)


if FEATURE_EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(FEATURE_EXTRACTOR_NAME, ClassifierFeatureExtractor)
