"""Optional TensorBoard output of a training run (train.tensorboard_every > 0; pip install -e '.[tensorboard]').

Every stats.jsonl line's scalars go to `<run>/tensorboard/` under their stats names, and every
`tensorboard_every` steps a grid of EMA samples, one per class (the first GRID_CLASSES classes),
made with DDIM-GRID_STEPS at omega GRID_OMEGA from fixed per-image seeds, so grids of one run compare
across steps. Sampling the grid draws from its own generators: training is unchanged by it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from coral.diffusion import Diffusion
from coral.sample import generate
from coral.sections import SampleConfig
from coral.unet import UNet

GRID_CLASSES, GRID_STEPS, GRID_OMEGA = 64, 25, 1.0


class TensorBoardLog:
    def __init__(self, folder: str | Path, every: int, diffusion: Diffusion, image_shape: tuple[int, int, int],
                 num_classes: int, bf16_autocast: bool):
        from torch.utils.tensorboard import SummaryWriter  # the optional dependency, only when asked for
        self.writer = SummaryWriter(str(folder))
        self.every, self.diffusion, self.image_shape = every, diffusion, image_shape
        self.labels = torch.arange(min(num_classes, GRID_CLASSES))
        self.sampler = SampleConfig(sampler="ddim", steps=GRID_STEPS, eta=0.0, omega=GRID_OMEGA,
                                    num_samples=len(self.labels), labels="stratified", seed=0,
                                    batch_size=len(self.labels), bf16_autocast=bf16_autocast, compile=False)

    def scalars(self, record: dict) -> None:
        """One stats line: every value but the step, at its step."""
        for name, value in record.items():
            if name != "step":
                self.writer.add_scalar(name, value, record["step"])

    def grid(self, step: int, ema: UNet) -> None:
        """The sample grid at `step`, when it is a multiple of `every`."""
        if step % self.every:
            return
        from torchvision.utils import make_grid  # torchvision loads torch._dynamo: a second, only when asked for
        images = generate(ema, self.diffusion, self.labels, self.labels, self.sampler, self.image_shape)
        self.writer.add_image("samples", make_grid(images, nrow=min(len(images), 8)), step)

    def close(self) -> None:
        self.writer.close()
