"""Diffusion maths against closed forms; samplers: shapes, per-image seeding, guidance."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from coral.diffusion import Diffusion
from coral.sample import ddim_timesteps, denoise, generate, guided_eps, sample_labels
from coral.sections import SampleConfig

DIFFUSION = Diffusion()
CFG = SampleConfig(sampler="ddim", steps=5, eta=0.0, omega=0.0, num_samples=4, labels="stratified", seed=7,
                   batch_size=4, bf16_autocast=False, compile=False)


def test_schedule_matches_linear_betas():
    betas = np.linspace(1e-4, 0.02, 1000)
    assert DIFFUSION.alphas_bar[500].item() == pytest.approx(np.prod(1 - betas[:501]), rel=1e-5)


def test_ancestral_mean_equals_epsilon_form():
    torch.manual_seed(0)
    x, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([1, 400, 999])
    out = DIFFUSION.ancestral_step(x, t, eps, torch.zeros_like(x))
    for i, step in enumerate(t.tolist()):  # mu = (x - beta / sqrt(1 - abar) eps) / sqrt(alpha)
        beta = 1e-4 + (0.02 - 1e-4) * step / 999
        abar = float(np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:step + 1]))
        mu = (x[i] - beta / math.sqrt(1 - abar) * eps[i]) / math.sqrt(1 - beta)
        assert torch.allclose(out[i], mu, atol=1e-4)


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 100)[:3] == [990, 980, 970] and ddim_timesteps(1000, 100)[-1] == 0
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))


def test_stratified_labels_exact_counts():
    labels = sample_labels(1000, 10, "stratified", 0)
    assert np.bincount(labels.numpy()).tolist() == [100] * 10
    assert labels[:100].unique().tolist() == [0]  # class blocks, head first


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_shapes_and_determinism_across_batch_sizes(small_unet, sampler):
    diffusion = Diffusion(T=20) if sampler == "ddpm" else DIFFUSION
    cfg = dataclasses.replace(CFG, sampler=sampler, eta=0.5, omega=1.0)
    labels, ids = torch.tensor([0, 3, 5, 9]), torch.arange(4)
    whole = generate(small_unet, diffusion, labels, ids, cfg, (1, 8, 8))
    assert whole.shape == (4, 1, 8, 8) and whole.dtype == torch.uint8
    halves = torch.cat([generate(small_unet, diffusion, labels[:2], ids[:2], cfg, (1, 8, 8)),
                        generate(small_unet, diffusion, labels[2:], ids[2:], cfg, (1, 8, 8))])
    assert (whole.int() - halves.int()).abs().max() <= 1  # equal up to float rounding at the uint8 edge
    other_seed = generate(small_unet, diffusion, labels, ids, dataclasses.replace(cfg, seed=8), (1, 8, 8))
    assert not torch.equal(whole, other_seed)


@pytest.mark.parametrize("sampler,eta,bf16", [("ddpm", 0.0, False), ("ddim", 0.0, False), ("ddim", 0.5, True)])
def test_the_eager_sampler_is_the_reference_loop_bit_for_bit(small_unet, sampler, eta, bf16):
    # The loop as the README's tables were sampled with: eps, then the step with fresh noise drawn per image.
    cfg = dataclasses.replace(CFG, sampler=sampler, eta=eta, omega=1.0, bf16_autocast=bf16)
    diffusion = Diffusion(T=20) if sampler == "ddpm" else DIFFUSION
    labels = torch.tensor([0, 3, 5])
    generators = [torch.Generator().manual_seed(7 * 2 ** 20 + i) for i in range(3)]
    draw = lambda: torch.stack([torch.randn((1, 8, 8), generator=g) for g in generators])  # noqa: E731
    x = draw()
    steps = list(reversed(range(20))) if sampler == "ddpm" else ddim_timesteps(1000, 5)
    with torch.no_grad():
        for k, step in enumerate(steps):
            t = torch.full((3,), step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                eps = guided_eps(small_unet, x, t, labels, 1.0)
            if sampler == "ddpm":
                x = diffusion.ancestral_step(x, t, eps, draw() if step > 0 else torch.zeros_like(x))
            else:
                t_prev = torch.full_like(t, steps[k + 1] if k + 1 < len(steps) else -1)
                x = diffusion.ddim_step(x, t, t_prev, eps, eta, draw() if eta > 0 else torch.zeros_like(x))
    assert torch.equal(denoise(small_unet, diffusion, labels, torch.arange(3), cfg, (1, 8, 8)), x)


def test_guidance_omega_zero_is_conditional_ddim(small_unet):
    labels, ids = torch.tensor([1, 2]), torch.tensor([0, 1])
    out = generate(small_unet, DIFFUSION, labels, ids, CFG, (1, 8, 8))
    # Hand-rolled deterministic DDIM with the conditional model and the same initial noise.
    x = torch.stack([torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(7 * 2 ** 20 + i)) for i in range(2)])
    abar = DIFFUSION.alphas_bar.double()
    steps = [800, 600, 400, 200, 0]
    with torch.no_grad():
        for k, step in enumerate(steps):
            eps = small_unet(x, torch.full((2,), step), labels).double()
            a, a_prev = abar[step], (abar[steps[k + 1]] if k + 1 < len(steps) else torch.tensor(1.0).double())
            x0 = (x.double() - (1 - a).sqrt() * eps) / a.sqrt()
            x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).float()
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert (out.int() - expected.int()).abs().max() <= 1


def test_batched_guidance_equals_two_passes(small_unet):
    torch.manual_seed(1)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([10, 200, 500, 900]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        batched = guided_eps(small_unet, x, t, y, 1.5, batched=True)
        two_pass = guided_eps(small_unet, x, t, y, 1.5, batched=False)
        by_hand = 2.5 * small_unet(x, t, y) - 1.5 * small_unet(x, t, torch.full_like(y, -1))
        conditional = guided_eps(small_unet, x, t, y, 0.0)
    assert torch.allclose(batched, two_pass, atol=1e-5) and torch.allclose(batched, by_hand, atol=1e-5)
    assert torch.allclose(conditional, small_unet(x, t, y), atol=0)


def test_interrupted_sampling_resumes_to_identical_images(tmp_path, monkeypatch):
    import coral.sample as sample_module
    from coral.config import load
    from coral.grid import run_config, setting_config
    from coral.data import write_split
    from coral.train import train

    cfg = load("config.yaml", preset="smoke")
    write_split(setting_config(cfg, "animals-rho0.1")["data"], 0.1, tmp_path / "split.npz", tmp_path / "counts.csv")
    checkpoint = train(run_config(cfg, "animals-rho0.1", "ddpm", 0), tmp_path / "split.npz", tmp_path / "run")
    sample_cfg = SampleConfig.of({**cfg["sample"], "num_samples": 40, "batch_size": 10}, "sample")
    sample_module.sample(checkpoint, sample_cfg, tmp_path / "whole.npz", tmp_path / "whole.png")

    original, calls = sample_module.generate, {"n": 0}

    def crash_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sample_module, "generate", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        sample_module.sample(checkpoint, sample_cfg, tmp_path / "resumed.npz", tmp_path / "resumed.png")
    assert len(list((tmp_path / "resumed.npz.partial").glob("batch-*.pt"))) == 2
    calls["n"] = -100  # no more crashes
    sample_module.sample(checkpoint, sample_cfg, tmp_path / "resumed.npz", tmp_path / "resumed.png")
    assert calls["n"] == -100 + 2  # only the two missing batches were generated
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "resumed.npz") as resumed:
        assert np.array_equal(whole["images"], resumed["images"])
        assert np.array_equal(whole["labels"], resumed["labels"])
    # a per-method omega resolves to the run's method: ddpm's 1.0 gives the scalar 1.0's images
    assert sample_cfg.omega == 1.0
    per_method = dataclasses.replace(sample_cfg, omega={"ddpm": 1.0, "coral": 3.0})
    sample_module.sample(checkpoint, per_method, tmp_path / "mapped.npz", tmp_path / "mapped.png")
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "mapped.npz") as mapped:
        assert np.array_equal(whole["images"], mapped["images"]) and json.loads(str(mapped["meta"]))["omega"] == 1.0
    assert not (tmp_path / "resumed.npz.partial").exists()
