"""Gaussian diffusion maths in one place (docs/method.md §3, §5): schedule, forward noising, posterior, samplers.

One method per formula; objectives and samplers call these and never index the tables themselves.
References: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM, arXiv:2006.11239) and
Song et al. 2021, "Denoising Diffusion Implicit Models" (DDIM, arXiv:2010.02502).

Indexing: coral's steps are t = 0, ..., T-1, so a table entry table[t] is DDPM's quantity at its step
t + 1 (DDPM counts 1, ..., T). abar below is DDPM's alpha-bar, which DDIM writes as alpha.
"""
from __future__ import annotations

import numpy as np
import torch


class Diffusion:
    """Linear-beta DDPM schedule; tables computed in float64, stored as float32 tensors of shape (T,)."""

    def __init__(self, T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02):
        self.T = T
        betas = np.linspace(beta_1, beta_T, T, dtype=np.float64)
        alphas_bar = np.cumprod(1.0 - betas)
        alphas_bar_prev = np.append(1.0, alphas_bar[:-1])
        posterior_var = betas * (1.0 - alphas_bar_prev) / (1.0 - alphas_bar)
        tables = {
            "betas": betas,
            "alphas_bar": alphas_bar,
            "sqrt_alphas_bar": np.sqrt(alphas_bar),
            "sqrt_one_minus_alphas_bar": np.sqrt(1.0 - alphas_bar),
            # Posterior q(x_{t-1} | x_t, x_0) mean coefficients (DDPM Eq. 7; see q_posterior_mean).
            "posterior_coef_x0": betas * np.sqrt(alphas_bar_prev) / (1.0 - alphas_bar),
            "posterior_coef_xt": (1.0 - alphas_bar_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_bar),
            # 'fixedlarge' variance: beta_t, with the posterior variance of step 1 at step 0.
            "fixedlarge_var": np.append(posterior_var[1], betas[1:]),
        }
        self.table_names = tuple(tables)
        for name, values in tables.items():
            setattr(self, name, torch.tensor(values, dtype=torch.float32))

    def to(self, device: torch.device | str) -> "Diffusion":
        """Move the tables to `device` (in place; returns self). Lookups index them with t on its own
        device, so the tables must live there: a lookup never copies from the host."""
        for name in self.table_names:
            setattr(self, name, getattr(self, name).to(device))
        return self

    @classmethod
    def from_config(cls, diffusion_cfg: dict) -> "Diffusion":
        return cls(diffusion_cfg["T"], diffusion_cfg["beta_1"], diffusion_cfg["beta_T"])

    @staticmethod
    def per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
        """Per-sample values (B,) reshaped to (B, 1, ..., 1) to broadcast against a tensor of `ndim` dims.

        The one broadcasting reshape: table lookups (`_at`), per-sample masks such as t > 0 and the
        objectives' per-sample weights and masks use it.
        """
        return values.reshape(-1, *([1] * (ndim - 1)))

    @classmethod
    def _at(cls, table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """table[t] reshaped to (B, 1, ..., 1) for broadcasting against a tensor of `ndim` dims."""
        return cls.per_sample(table[t], ndim)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t = prod_{s <= t} (1 - beta_s) for integer steps t (B,), shape (B,), float32.

        t = -1 stands for the clean image and gives abar = 1 (DDIM's alpha_0 := 1, after its Eq. 12).
        """
        return torch.where(t >= 0, self.alphas_bar[t.clamp(min=0)], torch.ones((), device=t.device))

    @staticmethod
    def _x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, sqrt_abar: torch.Tensor,
                     sqrt_one_minus_abar: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)  (DDPM Eq. 15; Eq. 4 solved for x0).

        The coefficients are arguments so that each caller keeps its own rounding: predict_x0 reads the
        float64-derived sqrt tables, ddim_step takes the square roots of the float32 abar (they can
        differ by 1 ulp, and outputs must stay bit-identical).
        """
        return (x_t - sqrt_one_minus_abar * eps) / sqrt_abar

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I)  (DDPM Eq. 4):

        x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with eps = `noise`.
        """
        return (self._at(self.sqrt_alphas_bar, t, x0.ndim) * x0
                + self._at(self.sqrt_one_minus_alphas_bar, t, x0.ndim) * noise)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (DDPM Eq. 15): inverts q_sample in x0."""
        return self._x0_from_eps(x_t, eps, self._at(self.sqrt_alphas_bar, t, x_t.ndim),
                                 self._at(self.sqrt_one_minus_alphas_bar, t, x_t.ndim))

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)  (DDPM Eq. 4 solved for eps): inverts
        q_sample in the noise. T2H's transferred targets are this with another sample's x0."""
        return (x_t - self._at(self.sqrt_alphas_bar, t, x_t.ndim) * x0) / self._at(
            self.sqrt_one_minus_alphas_bar, t, x_t.ndim)

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0)  (DDPM Eq. 6-7):

        mu_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
        with alpha_t = 1 - beta_t and abar_{t-1} = 1 at t = 0 (tables posterior_coef_x0/_xt).
        """
        return self._at(self.posterior_coef_x0, t, x_t.ndim) * x0 + self._at(self.posterior_coef_xt, t, x_t.ndim) * x_t

    def ancestral_step(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
        """One DDPM step x_t -> x_{t-1} = mu_t(x_t, x0(x_t, eps)) + sigma_t z  (DDPM Algorithm 2).

        mu_t is the posterior mean (Eq. 7) at the x0 of Eq. 15, which equals the eps form of Eq. 11,
        1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps). sigma_t^2 is the 'fixedlarge'
        variance: beta_t (DDPM §3.2), and at t = 0 the posterior variance beta-tilde of Eq. 7 at t = 1.
        No noise at t = 0.
        """
        mean = self.q_posterior_mean(self.predict_x0(x_t, t, eps), x_t, t)
        std = self._at(self.fixedlarge_var, t, x_t.ndim).sqrt() * self.per_sample((t > 0).float(), x_t.ndim)
        return mean + std * noise

    def ddim_step(self, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, eps: torch.Tensor,
                  eta: float, noise: torch.Tensor) -> torch.Tensor:
        """One DDIM step x_t -> x_{t_prev}  (DDIM Eq. 12, on a skipped subsequence as in DDIM §4.2):

        x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
        x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar),
        sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)  (DDIM Eq. 16).

        t_prev = -1 means the clean image, abar_prev = 1. eta = 0 is deterministic DDIM, eta = 1 has
        DDPM's posterior variance.
        """
        # DDIM's notation -> ours: alpha_t -> abar (DDPM's alpha-bar), alpha_{t-1} -> abar_prev,
        # epsilon_theta^(t)(x_t) -> eps, sigma_t -> sigma, epsilon_t -> noise.
        # 1. abar and abar_prev, broadcast per sample.
        abar = self.per_sample(self.alpha_bar(t), x_t.ndim)
        abar_prev = self.per_sample(self.alpha_bar(t_prev), x_t.ndim)
        # 2. "predicted x0" of Eq. 12, from the square roots of the float32 abar (not the sqrt tables).
        x0 = self._x0_from_eps(x_t, eps, abar.sqrt(), (1 - abar).sqrt())
        # 3. sigma_t(eta) of Eq. 16.
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
        # 4. "direction pointing to x_t" of Eq. 12; the clamp keeps rounding from making the root's
        #    argument negative (it is >= 0 in exact arithmetic for eta <= 1).
        direction = (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        # 5. Eq. 12: x_prev = sqrt(alpha_{t-1}) x0 + direction + sigma_t epsilon_t.
        return abar_prev.sqrt() * x0 + direction + sigma * noise
