"""The compiled denoising step (sample.compile) gives the eager images within float rounding, in one graph.

Inductor fuses and reorders float32 arithmetic, so compiled images differ from eager ones by rounding:
at most TOLERANCE on the images in [-1, 1] after the few steps here, at most one level of the uint8
images a sample set stores. The sample-set test compiles with Inductor (about a minute on 2 CPU cores).
"""
import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

from coral.measure import graph_breaks
from coral.compiled_step import COMPILE_CACHE, CompiledStep
from coral.diffusion import Diffusion
from coral.sample import denoise, denoising_step, sample
from coral.sections import SampleConfig

TOLERANCE = 1e-4
CFG = SampleConfig(sampler="ddpm", steps=3, eta=0.5, omega=1.0, num_samples=6, labels="stratified", seed=7,
                   batch_size=4, bf16_autocast=False, compile=True)
SHAPE = (1, 8, 8)


def test_compiled_ddpm_with_a_padded_last_batch_gives_the_eager_images(small_unet, monkeypatch):
    """The padding, traced by torch.compile; AOTAutograd's graph run eagerly ("aot_eager") stands for Inductor,
    whose code the sample-set test below generates."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    diffusion = Diffusion(T=3)
    labels, ids = torch.tensor([0, 3, 5, 9, 2, 1]), torch.arange(6)
    eager = denoise(small_unet, diffusion, labels, ids, CFG, SHAPE)
    step = CompiledStep(denoising_step(small_unet, diffusion, CFG), batch_size=4, device=torch.device("cpu"))
    assert not step.cuda_graphs  # none on the CPU
    compiled = torch.cat([denoise(small_unet, diffusion, labels[:4], ids[:4], CFG, SHAPE, step=step),
                          denoise(small_unet, diffusion, labels[4:], ids[4:], CFG, SHAPE, step=step)])  # padded 2 -> 4
    assert compiled.shape == eager.shape and (compiled - eager).abs().max() <= TOLERANCE
    five, steps = torch.zeros(5, *SHAPE), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="at most 4"):
        step(five, steps, steps, steps, five)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("bf16", [False, True])
def test_the_denoising_step_compiles_to_one_graph(small_unet, sampler, bf16):
    step = denoising_step(small_unet, Diffusion(), dataclasses.replace(CFG, sampler=sampler, bf16_autocast=bf16))
    x, t, y = torch.randn(4, *SHAPE), torch.tensor([999, 500, 20, 0]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert graph_breaks(step, x, t, t - 1, y, torch.randn(4, *SHAPE)) == 0


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory):
    from coral.config import load
    from coral.grid import run_config, setting_config
    from coral.data import write_split
    from coral.train import train

    folder = tmp_path_factory.mktemp("smoke")
    cfg = load("config.yaml", preset="smoke")
    write_split(setting_config(cfg, "animals-rho0.1")["data"], 0.1, folder / "split.npz", folder / "counts.csv")
    return cfg, train(run_config(cfg, "animals-rho0.1", "ddpm", 0), folder / "split.npz", folder / "run")


@pytest.mark.slow  # compiles
def test_compiled_ddim_sample_set_equals_the_eager_one_and_caches_beside_it(smoke_checkpoint, tmp_path):
    cfg, checkpoint = smoke_checkpoint
    eager_cfg = SampleConfig.of({**cfg["sample"], "eta": 0.5, "num_samples": 30, "batch_size": 20}, "sample")
    assert eager_cfg.sampler == "ddim" and not eager_cfg.compile
    sample(checkpoint, eager_cfg, tmp_path / "eager" / "s.npz", tmp_path / "eager" / "s.png")
    # another folder: the same identity in the same folder would reuse the eager set (coral.reuse)
    sample(checkpoint, dataclasses.replace(eager_cfg, compile=True), tmp_path / "compiled" / "s.npz",
           tmp_path / "compiled" / "s.png")  # batches of 20 and 10 (padded to 20)
    with np.load(tmp_path / "eager" / "s.npz") as eager, np.load(tmp_path / "compiled" / "s.npz") as compiled:
        assert np.array_equal(eager["labels"], compiled["labels"])
        assert np.abs(eager["images"].astype(int) - compiled["images"].astype(int)).max() <= 1
        assert json.loads(str(compiled["meta"]))["compile"] is True
    assert any((tmp_path / "compiled" / COMPILE_CACHE).iterdir())
