"""Which images each training step takes: a seeded shuffle per epoch, stateless in the step, so a resumed
run draws exactly the batches of an uninterrupted one (the diffusion training and the classifier's)."""
from __future__ import annotations

import torch


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded shuffle of one epoch (on the CPU)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_images, generator=generator)


def batch_indices(step: int, num_images: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the step's minibatch: a seeded shuffle per epoch, the last partial batch dropped.

    Stateless in `step`, so a resumed run draws exactly the batches of an uninterrupted one.
    """
    epoch, position = divmod(step, num_images // batch_size)
    return epoch_order(num_images, seed, epoch)[position * batch_size:(position + 1) * batch_size]


class DeviceBatches:
    """batch_indices(step, ...) served from the device: each epoch's order is copied there once,
    from pinned memory and asynchronously, so drawing a batch never waits for the host."""

    def __init__(self, num_images: int, batch_size: int, seed: int, device: torch.device):
        self.num_images, self.batch_size, self.seed, self.device = num_images, batch_size, seed, device
        self.epoch, self.order = None, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.num_images // self.batch_size)
        if epoch != self.epoch:
            order = epoch_order(self.num_images, self.seed, epoch)
            if self.device.type == "cuda":
                order = order.pin_memory().to(self.device, non_blocking=True)
            self.epoch, self.order = epoch, order
        return self.order[position * self.batch_size:(position + 1) * self.batch_size]
