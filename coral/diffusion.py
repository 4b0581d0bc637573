"""Gaussian diffusion maths in one place (docs/method.md §3): schedule, forward noising, posterior."""
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
            # Posterior q(x_{t-1} | x_t, x_0) mean coefficients.
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
    def _at(table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """table[t] reshaped to (B, 1, ..., 1) for broadcasting against a tensor of `ndim` dims."""
        return table[t].reshape(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        return (self._at(self.sqrt_alphas_bar, t, x0.ndim) * x0
                + self._at(self.sqrt_one_minus_alphas_bar, t, x0.ndim) * noise)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (x_t - self._at(self.sqrt_one_minus_alphas_bar, t, x_t.ndim) * eps) / self._at(
            self.sqrt_alphas_bar, t, x_t.ndim)

    def ancestral_step(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
        """One DDPM step x_t -> x_{t-1} with 'fixedlarge' variance; no noise at t = 0."""
        x0 = self.predict_x0(x_t, t, eps)
        mean = self._at(self.posterior_coef_x0, t, x_t.ndim) * x0 + self._at(self.posterior_coef_xt, t, x_t.ndim) * x_t
        std = self._at(self.fixedlarge_var, t, x_t.ndim).sqrt() * (t > 0).float().reshape(-1, *([1] * (x_t.ndim - 1)))
        return mean + std * noise

    def ddim_step(self, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, eps: torch.Tensor,
                  eta: float, noise: torch.Tensor) -> torch.Tensor:
        """One DDIM step x_t -> x_{t_prev} (t_prev = -1 means the clean image, abar = 1)."""
        abar = self._at(self.alphas_bar, t, x_t.ndim)
        abar_prev = torch.where(t_prev >= 0, self.alphas_bar[t_prev.clamp(min=0)],
                                torch.ones((), device=t.device)).reshape(abar.shape)
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
        direction = (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        return abar_prev.sqrt() * x0 + direction + sigma * noise
