"""The sampler's denoising step compiled at a fixed batch (sample.compile; docs/method.md §5).

Sampling a small image is launch-bound: at 32 px one eager step of the doubled guided batch launches
hundreds of small kernels. torch.compile fuses them (inductor) and, on a GPU, CUDA graphs replay the
whole step as one launch (mode "reduce-overhead"). Both need one input shape, so a smaller last batch
is padded to the fixed batch and the padding dropped from the result. The noise is still drawn per
image by coral.sample.denoise and passed in: compiled images equal the eager ones up to float rounding
(tests/test_compiled_step.py states the tolerance).

Inductor's compiled kernels are kept on disk (compile_cache) beside the sample sets of a run, so a
resumed job and the run's other sample sets (the omega study) compile from the cache.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

Step = Callable[..., torch.Tensor]  # coral.sample.denoising_step's: (x, t, t_prev, y, noise) -> x_prev
COMPILE_CACHE = "compile_cache"  # folder beside the sample sets of a run: results/samples/<run>/compile_cache/


class CompiledStep:
    """A denoising step (coral.sample.denoising_step) compiled for batches of exactly `batch_size`.

    Called like the step: (x (b, C, H, W), t (b,), t_prev (b,), y (b,), noise (b, C, H, W)) -> x_prev
    (b, C, H, W), for any b <= batch_size; b < batch_size is padded with copies of the last image.
    cuda_graphs: replay the compiled step as a CUDA graph (default: on a GPU; the CPU has none).
    The first call compiles (and on a GPU the next records the graph).
    """

    def __init__(self, step: Step, batch_size: int, device: torch.device, cuda_graphs: bool | None = None):
        self.eager, self.batch_size = step, batch_size
        self.cuda_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self.compiled = torch.compile(step, fullgraph=True, dynamic=False,
                                      mode="reduce-overhead" if self.cuda_graphs else None)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, y: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
        real = len(x)
        if real > self.batch_size:
            raise ValueError(f"a batch of {real} images; this compiled step takes at most {self.batch_size}")
        inputs = [_pad(value, self.batch_size) for value in (x, t, t_prev, y, noise)]
        if self.cuda_graphs:
            # A new replay overwrites the graph's previous output: mark the step boundary, and clone the
            # output, which the next step reads as its input.
            torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(*inputs)[:real].clone()
        return self.compiled(*inputs)[:real]


def _pad(value: torch.Tensor, rows: int) -> torch.Tensor:
    """value (b, ...) with its last row repeated up to (rows, ...); unchanged when b == rows."""
    missing = rows - len(value)
    return torch.cat([value, value[-1:].expand(missing, *value.shape[1:])]) if missing else value


@contextlib.contextmanager
def compile_cache(folder: str | Path) -> Iterator[None]:
    """Inductor's (and Triton's) on-disk cache in `folder` while the block runs: compile in it."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir  # loads Inductor: only to compile
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with temporary_cache_dir(str(folder)):
        yield
