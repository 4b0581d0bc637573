"""Samplers (docs/method.md §5): ancestral DDPM and DDIM with batched classifier-free guidance.

Generation is seeded per image (image i uses seed sample.seed * 2**20 + i: torch's CPU generator
keeps 32 bits of a seed, so seeds below 4096 and up to 2**20 images never collide), so an image
does not depend on the batch it was generated in.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from coral import identity, lineage, reuse
from coral.deadline import Deadline, OutOfTime
from coral.diffusion import Diffusion
from coral.sample_grids import save_grid_png
from coral.io import atomic_path, exclusive, provenance
from coral.progress import Progress
from coral import checkpoint as checkpoints
from coral.compiled_step import COMPILE_CACHE, CompiledStep, Step, compile_cache
from coral.grid import omega_of
from coral.sections import SampleConfig
from coral.tensors import default_device, unit_to_uint8
from coral.unet import UNet

log = logging.getLogger(__name__)


def guided_eps(model: UNet, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, omega: float,
               batched: bool = True) -> torch.Tensor:
    """eps^ = (1 + omega) eps(x, y) - omega eps(x, unconditional).

    With batched=True both passes run as one forward of the doubled batch; omega = 0 is
    plain conditional sampling (one pass).
    """
    if omega == 0:
        return model(x, t, y).float()
    if batched:
        eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, -1)])).float().chunk(2)
    else:
        eps_c, eps_u = model(x, t, y).float(), model(x, t, torch.full_like(y, -1)).float()
    return (1 + omega) * eps_c - omega * eps_u


def sample_labels(num_samples: int, num_classes: int, mode: str, seed: int) -> torch.Tensor:
    """'stratified': exactly num_samples / C per class in class-order blocks; 'uniform': i.i.d. per image."""
    if mode == "stratified":
        return torch.arange(num_samples) * num_classes // num_samples
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (num_samples,), generator=generator)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly skipped timesteps, high to low, ending at 0 (T=1000, steps=100: 990, 980, ..., 0)."""
    stride = T // steps
    return list(range(0, stride * steps, stride))[::-1]


MAX_IMAGES_PER_SEED = 2 ** 20


def image_seed(seed: int, image_id: int) -> int:
    """The generator seed of one image; unique within torch's 32-bit CPU seeds."""
    return seed * MAX_IMAGES_PER_SEED + image_id


class _PerImageNoise:
    """Gaussian noise drawn from one generator per image, so each image's noise ignores batching."""

    def __init__(self, image_ids: torch.Tensor, seed: int, shape: tuple[int, ...], device: torch.device):
        self.generators = [torch.Generator().manual_seed(image_seed(seed, i)) for i in image_ids.tolist()]
        self.shape, self.device = shape, device

    def draw(self) -> torch.Tensor:
        """The next noise of every image, (B, *shape) on the device; on a GPU copied from pinned memory
        without waiting, so the host draws the next step's noise while the device computes."""
        noise = torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
        if self.device.type == "cuda":
            return noise.pin_memory().to(self.device, non_blocking=True)
        return noise


def denoising_step(model: UNet, diffusion: Diffusion, sample_cfg: SampleConfig, batched_guidance: bool = True) -> Step:
    """The sampler's step: (x_t, t, t_prev, y, noise) -> x_{t_prev}, all of batch B: x_t and noise
    (B, C, H, W) float32, t, t_prev and y (B,) int64 on the model's device.

    The guided eps (one forward of the doubled batch, under bf16 autocast where configured), then the
    DDPM ancestral step (t_prev = t - 1, not read) or the DDIM step. coral.compiled_step compiles it.
    """
    omega, bf16, eta = sample_cfg.omega, sample_cfg.bf16_autocast, sample_cfg.eta

    def ddpm_step(x, t, t_prev, y, noise):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = guided_eps(model, x, t, y, omega, batched_guidance)
        return diffusion.ancestral_step(x, t, eps, noise)

    def ddim_step(x, t, t_prev, y, noise):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = guided_eps(model, x, t, y, omega, batched_guidance)
        return diffusion.ddim_step(x, t, t_prev, eps, eta, noise)

    return ddpm_step if sample_cfg.sampler == "ddpm" else ddim_step


def schedule(diffusion: Diffusion, sample_cfg: SampleConfig) -> list[tuple[int, int, bool]]:
    """The sampler's steps in order: (t, t_prev, whether the step takes fresh noise); t_prev = -1 is
    the clean image. DDPM: all T steps, noise except at t = 0; DDIM: its skipped steps, noise when eta > 0."""
    if sample_cfg.sampler == "ddpm":
        return [(step, step - 1, step > 0) for step in reversed(range(diffusion.T))]
    timesteps = ddim_timesteps(diffusion.T, sample_cfg.steps)
    return [(step, step_prev, sample_cfg.eta > 0) for step, step_prev in zip(timesteps, timesteps[1:] + [-1])]


@torch.no_grad()
def denoise(model: UNet, diffusion: Diffusion, labels: torch.Tensor, image_ids: torch.Tensor, sample_cfg: SampleConfig,
            image_shape: tuple[int, int, int], batched_guidance: bool = True, step: Step | None = None) -> torch.Tensor:
    """The sampler's loop: labels (B,), image_ids (B,) -> images (B, C, H, W) in about [-1, 1], on the
    model's device. Nothing in it waits for the device.

    step: the denoising step to run, by default denoising_step(...) run eagerly; a compiled one
    (coral.compiled_step.CompiledStep) gives the same images within float rounding. The noise is drawn
    here, image by image, and passed in. batched_guidance=False runs the two guidance passes
    separately (for benchmarks).
    """
    device = next(model.parameters()).device
    if step is None:
        step = denoising_step(model, diffusion, sample_cfg, batched_guidance)
    noise = _PerImageNoise(image_ids, sample_cfg.seed, image_shape, device)
    y = (labels.pin_memory() if device.type == "cuda" else labels).to(device, non_blocking=True)
    x = noise.draw()
    for t_now, t_prev, fresh_noise in schedule(diffusion, sample_cfg):
        t = torch.full((len(y),), t_now, device=device, dtype=torch.long)
        x = step(x, t, torch.full_like(t, t_prev), y, noise.draw() if fresh_noise else torch.zeros_like(x))
    return x


def generate(model: UNet, diffusion: Diffusion, labels: torch.Tensor, image_ids: torch.Tensor, sample_cfg: SampleConfig,
             image_shape: tuple[int, int, int], batched_guidance: bool = True, step: Step | None = None) -> torch.Tensor:
    """One batch of uint8 images (B, C, H, W) on the CPU (see denoise)."""
    x = denoise(model, diffusion, labels, image_ids, sample_cfg, image_shape, batched_guidance, step)
    return unit_to_uint8(x).cpu()


def sample(checkpoint: str | Path, sample_cfg: SampleConfig, out_npz: str | Path, out_png: str | Path,
           time_budget: float | None = None) -> None:
    """Generate sample.num_samples images from a run's EMA model; write them (uint8 + labels) and a preview grid.

    Each batch is kept in `<out_npz>.partial/` as it is finished, so an interrupted job resumes where
    it stopped; per-image seeds make the result identical to an uninterrupted run. Near the job's
    deadline (coral.deadline) it stops between batches with OutOfTime; running it again continues.
    One process at a time per output (Locked otherwise). With sample.compile the step is compiled once
    for all batches (coral.compiled_step), its kernels cached in compile_cache/ beside the output.
    """
    out_npz = Path(out_npz)
    with exclusive(out_npz.with_name(f".{out_npz.name}.lock"), f"samples {out_npz}"):
        _sample(checkpoint, sample_cfg, out_npz, out_png, time_budget)


def _sample(checkpoint: str | Path, sample_cfg: SampleConfig, out_npz: Path, out_png: str | Path,
            time_budget: float | None) -> None:
    with lineage.reading(checkpoint, "the trained model", "train") as checkpoint_sha256:
        state = checkpoints.load(checkpoint)
    model, diffusion, run_cfg = checkpoints.model_from_state(state, default_device())
    # a per-method omega (a mapping) resolves to this run's method's value
    sample_cfg = dataclasses.replace(sample_cfg, omega=omega_of(sample_cfg.as_dict(), run_cfg["run"]["method"]))
    sample_identity = identity.sample(sample_cfg.as_dict(), run_cfg["run"]["method"])
    if reuse.restore([out_npz, out_png], sample_identity, [checkpoint]):
        return
    num_classes = model.class_embedding.num_embeddings
    image_size = run_cfg["data"]["image_size"]
    image_shape = (model.head.in_channels, image_size, image_size)
    labels = sample_labels(sample_cfg.num_samples, num_classes, sample_cfg.labels, sample_cfg.seed)
    ids = torch.arange(len(labels))
    # Compiling leaves the images alone (within float rounding): finished batches resume across it.
    partial_key = {key: value for key, value in sample_cfg.as_dict().items() if key != "compile"}
    partial = _PartialSamples(Path(str(out_npz) + ".partial"), {"sample": partial_key,
                                                                "checkpoint_sha256": checkpoint_sha256})
    step, cache = None, contextlib.nullcontext()
    if sample_cfg.compile:
        step = CompiledStep(denoising_step(model, diffusion, sample_cfg), min(sample_cfg.batch_size, len(labels)),
                            next(model.parameters()).device)
        cache = compile_cache(out_npz.parent / COMPILE_CACHE)
    batch_seconds = 0.0
    batches = []
    with Deadline.for_this_job(time_budget) as deadline, cache:
        progress = Progress(total=len(labels), desc=f"sample {out_npz}", unit="img")
        for start in range(0, len(labels), sample_cfg.batch_size):
            if partial.has(start):
                batches.append(partial.load(start))
                progress.update(len(batches[-1]))
                continue
            if deadline.must_stop(2 * batch_seconds):
                raise OutOfTime(f"{out_npz}: stopped after {start} of {len(labels)} images before the job's time "
                                f"limit; finished batches are kept, run the job again to continue")
            batch_start = time.perf_counter()
            batch = slice(start, start + sample_cfg.batch_size)
            batches.append(generate(model, diffusion, labels[batch], ids[batch], sample_cfg, image_shape,
                                    step=step))
            partial.save(start, batches[-1])
            batch_seconds = time.perf_counter() - batch_start
            progress.update(len(batches[-1]))
        progress.close()
    images = torch.cat(batches)
    class_names = state["class_names"]
    steps = diffusion.T if sample_cfg.sampler == "ddpm" else sample_cfg.steps  # denoising steps run
    meta = {"run": run_cfg["run"], **sample_cfg.as_dict(), "steps": steps, "num_classes": num_classes, "class_names": class_names,
            "checkpoint": str(checkpoint), "provenance": provenance()}
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=images.numpy(), labels=labels.numpy(), meta=np.array(json.dumps(meta)))
    save_grid_png(images.numpy(), labels.numpy(), num_classes, out_png, class_names=class_names)
    lineage.record([out_npz, out_png], "sample", [checkpoint], {"run": run_cfg["run"], "sample": sample_cfg.as_dict()},
                   sample_identity)
    reuse.keep([out_npz, out_png], sample_identity)
    partial.remove()


class _PartialSamples:
    """Finished batches of an interrupted sampling job, valid only for the same config and checkpoint."""

    def __init__(self, folder: Path, key: dict):
        self.folder = folder
        key_file = folder / "key.json"
        if folder.exists() and (not key_file.exists() or json.loads(key_file.read_text()) != key):
            log.info("discarding %s: written for another config or checkpoint", folder)
            self.remove()
        if not folder.exists():
            folder.mkdir(parents=True)
            with atomic_path(key_file) as tmp:
                tmp.write_text(json.dumps(key))
        elif any(folder.glob("batch-*.pt")):
            log.info("resuming from %d finished batches in %s", len(list(folder.glob("batch-*.pt"))), folder)

    def _path(self, start: int) -> Path:
        return self.folder / f"batch-{start:08d}.pt"

    def has(self, start: int) -> bool:
        return self._path(start).exists()

    def save(self, start: int, images: torch.Tensor) -> None:
        with atomic_path(self._path(start)) as tmp:
            torch.save(images, tmp)

    def load(self, start: int) -> torch.Tensor:
        return torch.load(self._path(start), weights_only=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
