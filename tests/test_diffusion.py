"""Diffusion's formulas (coral/diffusion.py) against each other and against float64 closed forms."""
import numpy as np
import pytest
import torch

from coral.diffusion import Diffusion

DIFFUSION = Diffusion(1000, 1e-4, 0.02)
BETAS = np.linspace(1e-4, 0.02, 1000)
ABAR = np.cumprod(1 - BETAS)  # float64; ABAR[t] is coral's step t


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(5, 2, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(5, 2, 4, 4, generator=g)
    return x0, eps, torch.tensor([0, 1, 250, 700, 999])


def test_predict_x0_and_predict_eps_invert_q_sample():
    x0, eps, t = batch()
    x_t = DIFFUSION.q_sample(x0, t, eps)
    assert torch.allclose(DIFFUSION.predict_eps(x_t, t, x0), eps, atol=1e-4)
    # Dividing by sqrt(abar) amplifies float32 rounding by up to 1 / sqrt(abar_999) ~ 160.
    assert torch.allclose(DIFFUSION.predict_x0(x_t, t, eps), x0, atol=1e-3)
    assert torch.allclose(DIFFUSION.predict_x0(x_t[:4], t[:4], eps[:4]), x0[:4], atol=1e-5)


def test_alpha_bar_lookup_and_clean_image_step():
    t = torch.tensor([-1, 0, 500, 999])
    assert DIFFUSION.alpha_bar(t).tolist() == [1.0] + DIFFUSION.alphas_bar[t[1:]].tolist()
    assert DIFFUSION.alpha_bar(t)[1:].double().numpy() == pytest.approx(ABAR[[0, 500, 999]], rel=1e-6)


def test_posterior_mean_closed_form_float64():
    x0, x_t, _ = batch(1)  # any x_t: the mean is linear in (x0, x_t)
    step = 400  # DDPM Eq. 7 with abar_{t-1} = ABAR[step - 1], beta_t = BETAS[step]
    coef_x0 = np.sqrt(ABAR[step - 1]) * BETAS[step] / (1 - ABAR[step])
    coef_xt = np.sqrt(1 - BETAS[step]) * (1 - ABAR[step - 1]) / (1 - ABAR[step])
    expected = coef_x0 * x0.double().numpy() + coef_xt * x_t.double().numpy()
    mean = DIFFUSION.q_posterior_mean(x0, x_t, torch.full((5,), step))
    assert np.abs(mean.double().numpy() - expected).max() < 1e-5


def test_ancestral_noise_scale_is_fixedlarge_and_zero_at_last_step():
    x_t, eps, t = batch(2)
    z = torch.ones_like(x_t)
    added = DIFFUSION.ancestral_step(x_t, t, eps, z) - DIFFUSION.ancestral_step(x_t, t, eps, torch.zeros_like(z))
    # beta_t for t >= 1 (DDPM §3.2); no noise at t = 0
    expected_std = [0.0] + np.sqrt(BETAS[t[1:].numpy()]).tolist()
    assert added.amax((1, 2, 3)).tolist() == pytest.approx(expected_std, rel=1e-4, abs=1e-7)
    assert added.amin((1, 2, 3)).tolist() == pytest.approx(expected_std, rel=1e-4, abs=1e-7)


def test_ddim_to_clean_image_with_eta_zero_is_predict_x0():
    x0, eps, t = batch(3)
    x_t = DIFFUSION.q_sample(x0, t, eps)
    noise = torch.randn_like(x_t)  # ignored: sigma = 0
    out = DIFFUSION.ddim_step(x_t, t, torch.full_like(t, -1), eps, 0.0, noise)
    # Equal up to the 1-ulp differences of sqrt(abar) vs the sqrt tables, amplified ~160x at t = 999.
    assert torch.allclose(out, DIFFUSION.predict_x0(x_t, t, eps), rtol=0, atol=1e-4)


def test_ddim_eta_one_single_step_has_ddpm_posterior_variance():
    x_t, eps, _ = batch(4)
    t, t_prev = torch.full((5,), 300), torch.full((5,), 299)
    z = torch.ones_like(x_t)
    sigma = DIFFUSION.ddim_step(x_t, t, t_prev, eps, 1.0, z) - DIFFUSION.ddim_step(x_t, t, t_prev, eps, 1.0, 0 * z)
    # DDIM Eq. 16 at eta = 1 over one step is DDPM's beta-tilde (Eq. 7).
    beta_tilde = (1 - ABAR[299]) / (1 - ABAR[300]) * BETAS[300]
    assert sigma.flatten().tolist() == pytest.approx([np.sqrt(beta_tilde)] * sigma.numel(), rel=1e-3)
    # With eta = 0 DDIM is deterministic and keeps the eps of x_t: q_sample(x0_hat, t_prev, eps).
    x0_hat = DIFFUSION.predict_x0(x_t, t, eps)
    det = DIFFUSION.ddim_step(x_t, t, t_prev, eps, 0.0, z)
    assert torch.allclose(det, DIFFUSION.q_sample(x0_hat, t_prev, eps), atol=1e-5)
