"""One optimisation step (docs/method.md §3): the batch drawn eagerly, the gradient of this device's share
of it, then the update.

1. `draw_batch` (eager) makes all of a step's random draws over the global batch, in one fixed order:
   flips, t, noise, label drops, then the objective's own (CBDM's y', T2H's targets). Every device draws
   the same global batch (same seed, same generator state) and trains on its slice of it, so N devices
   see the batch of one. What runs after draws nothing but the network's dropout.
2. `gradients`: the loss of this device's share and its backward, in one pass or in micro-batches of
   train.micro_batch_size (gradient accumulation). A batch term (CORAL's SupCon) covers the whole global
   batch: across devices through an all-gather that carries gradients (Objective.forward's `gather`),
   across micro-batches through the gradient cache (`_gradient_cache`).
3. `update`: gradient-norm clipping, Adam and the EMA.

With train.compile the loss (forward, and through AOTAutograd its backward) and the update are each
compiled, one graph for every objective; with train.cuda_graphs both replay as CUDA graphs on a GPU.
Dropout is the one draw inside: a compiled network draws its masks with Inductor's generator (seeded
from torch's), so with model.dropout > 0 compiled and eager runs differ in their masks.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from coral import checkpoint
from coral.diffusion import Diffusion
from coral.ranks import ONE, Ranks
from coral.objectives import Objective, build_objective, drop_labels, with_batch_terms
from coral.sections import TrainConfig
from coral.tensors import uint8_to_unit
from coral.unet import UNet, build_unet


@dataclasses.dataclass
class Batch:
    """A step's drawn batch: x0 (B, C, H, W) in [-1, 1], y (B,) true labels, y_in (B,) the labels the
    network sees (-1: dropped), t (B,) steps, noise (B, C, H, W), drawn: the objective's draws (B, ...)."""

    x0: torch.Tensor
    y: torch.Tensor
    y_in: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    drawn: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.y)

    def part(self, start: int, size: int) -> "Batch":
        """Samples start, ..., start + size - 1 (views)."""
        def cut(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.narrow(0, start, size)
        return Batch(cut(self.x0), cut(self.y), cut(self.y_in), cut(self.t), cut(self.noise),
                     {name: cut(value) for name, value in self.drawn.items()})

    def parts(self, size: int) -> list["Batch"]:
        """Consecutive parts of `size` samples (size divides the batch)."""
        return [self.part(start, size) for start in range(0, len(self), size)]

    def inputs(self) -> tuple:
        return self.x0, self.y, self.y_in, self.t, self.noise, self.drawn


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def draw_batch(images_uint8: torch.Tensor, y: torch.Tensor, objective: Objective, tcfg: TrainConfig,
               hflip: bool) -> Batch:
    """The step's random draws for the global batch of uint8 images (B, C, H, W) and labels (B,)."""
    x0 = uint8_to_unit(images_uint8)
    if hflip:
        x0 = random_hflip(x0)
    if tcfg.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, objective.diffusion.T, (len(y),), device=y.device)
    noise = torch.randn_like(x0)
    y_in = drop_labels(y, tcfg.label_drop, tcfg.p_uncond)
    return Batch(x0, y, y_in, t, noise, objective.draw(x0, y, y_in, t, noise))


class StepLoss(nn.Module):
    """The network and the objective as one module: what DDP wraps (so the objective's own weights,
    CORAL's head, are averaged too) and train.compile compiles.

    forward(x0, y, y_in, t, noise, drawn) -> the loss terms of this device's share of the batch;
    with embed=True -> (the sample terms, z (b, D)): a pass of the gradient cache.
    """

    def __init__(self, model: UNet, objective: Objective, gather: Callable | None):
        super().__init__()
        self.model, self.objective, self.gather = model, objective, gather

    def forward(self, x0, y, y_in, t, noise, drawn, embed: bool = False):
        if embed:
            return self.objective.sample_terms(self.model, x0, y, y_in, t, noise, **drawn)
        return self.objective(self.model, x0, y, y_in, t, noise, gather=self.gather, **drawn)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, list(model.parameters()), 1.0 - decay)


# Adam.step without torch.optim's wrapper, the same arithmetic: the wrapper's graph breaks (it compiles a
# step as a graph of its own) would split the compiled update in three.
ADAM_STEP = inspect.unwrap(torch.optim.Adam.step)


def learning_rate(tcfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (from 0): linear warm-up from 0 over train.warmup steps."""
    return tcfg.lr * (min(step, tcfg.warmup) / tcfg.warmup if tcfg.warmup > 0 else 1.0)


@dataclasses.dataclass
class TrainingSetup:
    """Everything one optimisation step touches."""

    model: UNet
    ema: UNet
    objective: Objective
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    diffusion: Diffusion
    config: TrainConfig
    ranks: Ranks
    loss: Callable  # StepLoss, in DDP on several devices, compiled with train.compile
    ddp: nn.parallel.DistributedDataParallel | None
    update: Callable[[], torch.Tensor]  # clip, Adam, EMA -> the gradient norm; compiled with train.compile

    @property
    def cuda_graphs(self) -> bool:
        return self.config.compile and self.config.cuda_graphs and self.params[0].is_cuda


def build_training(run_cfg: dict, class_counts: torch.Tensor, in_channels: int, num_classes: int,
                   device: torch.device, ranks: Ranks = ONE, compile_cache: Path | None = None) -> TrainingSetup:
    """Model, EMA copy, objective, Adam, the loss and the update on `device`; with train.compile,
    Inductor keeps its compiled kernels in `compile_cache` (a resumed job reuses them)."""
    tcfg = TrainConfig.of(run_cfg["train"], "train")
    if tcfg.compile:
        prepare_compile(tcfg, device, compile_cache)
    diffusion = Diffusion.from_config(run_cfg["diffusion"]).to(device)
    model = build_unet(run_cfg["model"], in_channels, num_classes).to(device)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(run_cfg["objective"]["name"], run_cfg["objective"]["hparams"], diffusion,
                                class_counts, model).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = list(model.parameters()) + list(objective.parameters())
    if tcfg.compile:  # lr a tensor, filled each step: the schedule never recompiles the update
        optimizer = torch.optim.Adam(params, lr=torch.tensor(tcfg.lr, device=device), foreach=True, capturable=True)
    else:  # one fused kernel on GPUs; multi-tensor (foreach) updates on CPUs
        fused = device.type == "cuda"
        optimizer = torch.optim.Adam(params, lr=tcfg.lr, fused=fused, foreach=not fused)
    loss = StepLoss(model, objective, ranks.gather if ranks.world > 1 else None)
    ddp = None
    if ranks.world > 1:
        ddp = loss = nn.parallel.DistributedDataParallel(
            loss, device_ids=[device] if device.type == "cuda" else None, forward_sync_buffers=False)
    setup = TrainingSetup(model, ema, objective, optimizer, params, diffusion, tcfg, ranks, loss, ddp, update=None)

    @torch.no_grad()
    def update() -> torch.Tensor:
        grad_norm = torch.nn.utils.clip_grad_norm_(setup.params, tcfg.grad_clip)
        ADAM_STEP(setup.optimizer)
        ema_update(setup.ema, setup.model, tcfg.ema_decay)
        return grad_norm

    setup.update = update
    if tcfg.compile:
        options = {"triton.cudagraphs": True} if tcfg.cuda_graphs and device.type == "cuda" else {}
        setup.loss = torch.compile(loss, options=options)
        setup.update = torch.compile(update, options=options)
    return setup


def prepare_compile(tcfg: TrainConfig, device: torch.device, cache: Path | None) -> None:
    """Inductor's cache in `cache`; on a GPU, cuDNN's autotuner and TF32 where fp32 is configured."""
    if cache is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache).resolve())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if not tcfg.bf16_autocast:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Adam's moments and step counts from a checkpoint, keeping this job's way of computing the update
    (its lr object, foreach, fused, capturable): a checkpoint of an eager job resumes compiled, and back."""
    kept = [{key: group[key] for key in ("lr", "foreach", "fused", "capturable")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keep in zip(optimizer.param_groups, kept):
        group.update(keep)


def training_step(setup: TrainingSetup, images_uint8: torch.Tensor, y: torch.Tensor, run_cfg: dict,
                  step: int) -> dict[str, torch.Tensor]:
    """Optimisation step `step` (from 0) on the global batch, uint8 images (B, C, H, W) and labels (B,);
    returns the loss terms (means over this device's share) and the gradient norm.

    Nothing here waits for the device: the returned tensors stay where they were computed.
    """
    tcfg, ranks = setup.config, setup.ranks
    batch = draw_batch(images_uint8, y, setup.objective, tcfg, run_cfg["data"]["hflip"])
    per_device = len(batch) // ranks.world
    if setup.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    # Compiled, the gradients keep their memory between steps (the update's CUDA graph reads it).
    setup.optimizer.zero_grad(set_to_none=not tcfg.compile)
    with ranks.own_stream(run_cfg["run"]["seed"], step, batch.x0.device):
        terms = gradients(setup, batch, batch.part(ranks.rank * per_device, per_device))
    lr = learning_rate(tcfg, step)
    for group in setup.optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
    grad_norm = setup.update()
    return {**terms, "grad_norm": grad_norm}


def gradients(setup: TrainingSetup, batch: Batch, share: Batch) -> dict[str, torch.Tensor]:
    """Backpropagate the loss of `share`, this device's part of the global `batch`, in micro-batches
    of train.micro_batch_size (0: one pass); returns its loss terms."""
    tcfg = setup.config
    parts = share.parts(tcfg.micro_batch_size or len(share))
    autocast = torch.autocast(share.x0.device.type, dtype=torch.bfloat16, enabled=tcfg.bf16_autocast)
    if len(parts) == 1:
        with autocast:
            terms = setup.loss(*share.inputs())
        terms["loss"].backward()
        return terms
    if setup.objective.has_batch_term:
        return _gradient_cache(setup, batch, share, parts, autocast)
    totals: dict[str, torch.Tensor] = {}
    for i, part in enumerate(parts):
        with _accumulating(setup, i < len(parts) - 1):
            with autocast:
                terms = setup.loss(*part.inputs())
            (terms["loss"] / len(parts)).backward()
        _add(totals, terms, len(parts))
    return totals


def _gradient_cache(setup: TrainingSetup, batch: Batch, share: Batch, parts: list[Batch],
                    autocast: torch.autocast) -> dict[str, torch.Tensor]:
    """Micro-batches with a batch term over the whole global batch, exact up to rounding (the "gradient
    cache" of Gao et al. 2021): a pass without gradients embeds every sample (z), the batch term's
    gradient with respect to all embeddings is taken once, and each micro-batch's pass then backpropagates
    its sample loss plus its slice of that gradient. The passes with gradients replay the network's
    random draws (dropout) of those without, so their embeddings are the same."""
    device, ranks = share.x0.device, setup.ranks
    rng = checkpoint.rng_states(device)
    with torch.no_grad(), autocast:
        z = torch.cat([setup.loss(*part.inputs(), embed=True)[1] for part in parts])
    everyone = ranks.gather_detached(z).requires_grad_()  # (B, D) over the devices
    with autocast:
        batch_terms = setup.objective.batch_terms(everyone, batch.y, batch.y_in, batch.t)
    batch_terms["loss"].backward()
    # Every device holds the batch term's whole gradient; DDP averages the devices' gradients, hence x world.
    dz = everyone.grad.narrow(0, ranks.rank * len(share), len(share)) * ranks.world
    checkpoint.restore_rng(rng, device)
    totals: dict[str, torch.Tensor] = {}
    for i, (part, dz_part) in enumerate(zip(parts, dz.split(len(parts[0])))):
        with _accumulating(setup, i < len(parts) - 1):
            with autocast:
                terms, z_part = setup.loss(*part.inputs(), embed=True)
            (terms["loss"] / len(parts) + (z_part * dz_part).sum()).backward()
        _add(totals, terms, len(parts))
    return with_batch_terms(totals, {name: value.detach() for name, value in batch_terms.items()})


def _accumulating(setup: TrainingSetup, more_to_come: bool):
    """DDP averages the gradients over the devices once, in the backward of the last micro-batch."""
    return setup.ddp.no_sync() if setup.ddp is not None and more_to_come else contextlib.nullcontext()


def _add(totals: dict[str, torch.Tensor], terms: dict[str, torch.Tensor], parts: int) -> None:
    for name, value in terms.items():
        totals[name] = totals.get(name, 0) + value.detach() / parts
