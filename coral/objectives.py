"""Training objectives of docs/method.md §4, one small class each, chosen by name.

Every objective maps (model, x0, y, y_in, t, noise, **drawn) to a dict of scalar loss terms whose
"loss" entry is optimised; the other entries are logged. `y` holds the true labels and `y_in` the
labels the network sees (-1 where guidance training dropped them); `drawn` are the objective's own
random draws for the batch (`draw`, made before the network runs, so the loss itself draws nothing).

The loss is split in two for batches spread over devices and micro-batches (coral.step):
`sample_terms`, means over the samples (they split and average), and `batch_terms`, a term that
couples the samples of the whole batch (CORAL's SupCon) from their embeddings z.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from coral.diffusion import Diffusion
from coral.unet import UNet


def drop_labels(y: torch.Tensor, mode: str, p_uncond: float) -> torch.Tensor:
    """Classifier-free guidance label dropping; dropped labels become -1.

    mode 'batch' (released code): one coin per minibatch drops every label with probability p_uncond.
    mode 'sample': each label is dropped independently with probability p_uncond.
    """
    if mode == "batch":
        drop = (torch.rand(1, device=y.device) < p_uncond).expand_as(y)
    elif mode == "sample":
        drop = torch.rand(y.shape, device=y.device) < p_uncond
    else:
        raise ValueError(f"train.label_drop: {mode!r} is not one of 'batch', 'sample'")
    return torch.where(drop, torch.full_like(y, -1), y)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).pow(2).mean()


class Objective(nn.Module):
    """Base class: holds the diffusion and the training-set class prior (empirical frequencies)."""

    name = ""
    has_batch_term = False  # whether sample_terms returns embeddings for batch_terms

    def __init__(self, diffusion: Diffusion, class_counts: torch.Tensor, model: UNet):
        super().__init__()
        self.diffusion = diffusion
        counts = torch.as_tensor(class_counts, dtype=torch.float32)
        self.register_buffer("prior", counts / counts.sum(), persistent=False)

    def draw(self, x0, y, y_in, t, noise) -> dict[str, torch.Tensor]:
        """The objective's own random draws for a batch, each a tensor whose first dim is the batch's
        (so it is sliced with the batch); none by default."""
        return {}

    def sample_terms(self, model: UNet, x0, y, y_in, t, noise, **drawn
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The loss terms that are means over the samples, and the embeddings z (B, D) that
        `batch_terms` takes (None: the objective has no batch term)."""
        raise NotImplementedError

    def batch_terms(self, z: torch.Tensor, y, y_in, t) -> dict[str, torch.Tensor]:
        """The term over a whole batch from its embeddings z (B, D); its "loss" adds to the sample terms'."""
        raise NotImplementedError

    def forward(self, model: UNet, x0, y, y_in, t, noise, gather=None, **drawn) -> dict[str, torch.Tensor]:
        """The loss terms of a batch. `gather` (a tensor's slices of every device -> the whole): this
        device holds one slice of a batch whose batch term covers all of it (coral.distributed)."""
        terms, z = self.sample_terms(model, x0, y, y_in, t, noise, **drawn)
        if z is None:
            return terms
        if gather is not None:
            z, y, y_in, t = gather(z), gather(y), gather(y_in), gather(t)
        return with_batch_terms(terms, self.batch_terms(z, y, y_in, t))


def with_batch_terms(sample: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The sample terms with a batch term: the losses add, the other entries are logged as they are."""
    return {"loss": sample["loss"] + batch["loss"], **{k: v for k, v in sample.items() if k != "loss"},
            **{k: v for k, v in batch.items() if k != "loss"}}


class DDPM(Objective):
    """Plain epsilon MSE over all elements."""

    name = "ddpm"

    def sample_terms(self, model, x0, y, y_in, t, noise):
        eps = model(self.diffusion.q_sample(x0, t, noise), t, y_in)
        loss = mse(eps, noise)
        return {"loss": loss, "mse": loss}, None


class CBDM(Objective):
    """Class-balancing regulariser towards predictions under labels y' ~ prior (Qin et al. 2023).

    Both passes share one forward of the doubled batch; the regulariser only acts on samples
    whose label was kept.
    """

    name = "cbdm"

    def __init__(self, diffusion, class_counts, model, tau: float, gamma: float, prior: str):
        super().__init__(diffusion, class_counts, model)
        if prior == "uniform":
            self.prior = torch.full_like(self.prior, 1.0 / len(self.prior))
        self.tau, self.gamma = tau, gamma

    def draw(self, x0, y, y_in, t, noise):
        """y' (B,) ~ the prior."""
        return {"y_prime": torch.multinomial(self.prior, len(y), replacement=True)}

    def sample_terms(self, model, x0, y, y_in, t, noise, y_prime):
        x_t = self.diffusion.q_sample(x0, t, noise)
        labelled = y_in >= 0  # a mask, not a branch: no host synchronisation per step
        eps, eps_prime = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y_in, y_prime])).float().chunk(2)
        base = mse(eps, noise)
        weight = Diffusion.per_sample(t.float() / self.diffusion.T * self.tau * labelled.float(), x_t.ndim)
        reg = (weight * (eps - eps_prime.detach()).pow(2)).mean()
        commit = (weight * (eps.detach() - eps_prime).pow(2)).mean()
        return {"loss": base + reg + self.gamma * commit, "mse": base, "cb_reg": reg, "cb_commit": commit}, None


@torch.no_grad()
def t2h_targets(diffusion: Diffusion, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                noise: torch.Tensor, prior: torch.Tensor, mode: str):
    """T2H regression targets (Zhang et al. 2024) by in-batch posterior sampling and gating.

    Returns (targets like x0, chosen index j (B,), posterior weights (B, B)). Where the gate
    keeps j = i the target is exactly the true noise.
    """
    abar = diffusion.alpha_bar(t).double()
    flat_c = (x_t.double().flatten(1) / abar.sqrt()[:, None])  # c_i = x0_i + sigma_i eps_i
    sigma2 = 1.0 / abar - 1.0
    dist2 = torch.cdist(flat_c, x0.double().flatten(1), compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    logits = -dist2 / (2 * sigma2[:, None])
    weights = (logits - logits.amax(1, keepdim=True)).exp()  # softmax over j, in float64
    weights = weights / weights.sum(1, keepdim=True)
    j = torch.multinomial(weights.float(), 1).squeeze(1)
    self_index = torch.arange(len(y), device=y.device)
    if mode == "t2h":
        accept = prior[y[j]] >= prior[y]
    elif mode == "h2t":
        accept = prior[y[j]] <= prior[y]
    elif mode == "full":
        accept = torch.ones_like(j, dtype=torch.bool)
    else:
        raise ValueError(f"objectives.t2h.mode: {mode!r} is not one of 't2h', 'h2t', 'full'")
    j = torch.where(accept, j, self_index)
    transferred = diffusion.predict_eps(x_t, t, x0[j])  # the noise that takes x0_j to x_t
    targets = torch.where(Diffusion.per_sample(j == self_index, x0.ndim), noise, transferred)
    return targets, j, weights


class T2H(Objective):
    """Same loss as DDPM against calibrated targets; no extra term or forward pass. The targets need
    no gradient and no network: they are drawn with the batch."""

    name = "t2h"

    def __init__(self, diffusion, class_counts, model, mode: str):
        super().__init__(diffusion, class_counts, model)
        self.mode = mode

    def draw(self, x0, y, y_in, t, noise):
        """targets (B, C, H, W) and transferred (B,) bool: whether sample i's target came from another image."""
        x_t = self.diffusion.q_sample(x0, t, noise)
        targets, j, _ = t2h_targets(self.diffusion, x0, x_t, t, y, noise, self.prior, self.mode)
        return {"targets": targets, "transferred": j != torch.arange(len(j), device=j.device)}

    def sample_terms(self, model, x0, y, y_in, t, noise, targets, transferred):
        loss = mse(model(self.diffusion.q_sample(x0, t, noise), t, y_in), targets)
        return {"loss": loss, "mse": loss, "t2h_transfer_rate": transferred.float().mean()}, None


def supcon_per_anchor(z: torch.Tensor, y: torch.Tensor, temperature: float):
    """Supervised contrastive loss (Khosla et al. 2020) per anchor, on cosine similarity.

    z (B, D), y (B,). For anchor i, positives are p != i with y_p = y_i, the denominator runs
    over all a != i. Returns (loss (B,), has_positive (B,) bool); anchors without a positive get 0.
    """
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    num_pos = positives.sum(1)
    loss = -(log_prob * positives).sum(1) / num_pos.clamp(min=1)
    return loss, num_pos > 0


def coral_time_weight(t: torch.Tensor, T: int, weight: float, tau_r: float) -> torch.Tensor:
    """lambda(t) = w * exp((1 - t/T) / tau_r): largest at low noise."""
    return weight * torch.exp((1 - t.float() / T) / tau_r)


class CORAL(Objective):
    """DDPM loss + lambda(t) * SupCon on a projection of the pooled UNet bottleneck."""

    name = "coral"
    has_batch_term = True

    def __init__(self, diffusion, class_counts, model, weight: float, tau_r: float, tau_sc: float,
                 reduction: str, proj_dim: int):
        super().__init__(diffusion, class_counts, model)
        self.weight, self.tau_r, self.tau_sc, self.reduction = weight, tau_r, tau_sc, reduction
        self.head = nn.Linear(self.embedding_dim(model), proj_dim)

    def embedding_dim(self, model: UNet) -> int:
        return model.bottleneck_dim

    def embedding(self, x_t, t, eps, bottleneck) -> torch.Tensor:
        return bottleneck

    def sample_terms(self, model, x0, y, y_in, t, noise):
        x_t = self.diffusion.q_sample(x0, t, noise)
        eps, bottleneck = model(x_t, t, y_in, return_bottleneck=True)
        base = mse(eps, noise)
        z = self.head(self.embedding(x_t, t, eps, bottleneck).float())
        return {"loss": base, "mse": base}, z

    def batch_terms(self, z, y, y_in, t):
        per_anchor, valid = supcon_per_anchor(z, y, self.tau_sc)
        # Masks instead of branches keep the step free of host synchronisation.
        labelled_batch = (y_in >= 0).any().float()  # a fully dropped batch carries no contrastive term
        num_valid = valid.sum().clamp(min=1)
        lam = coral_time_weight(t, self.diffusion.T, self.weight, self.tau_r)
        if self.reduction == "batch_mean":
            term = lam.mean() * (per_anchor * valid).sum() / num_valid
        else:  # per_anchor
            term = (lam * per_anchor * valid).sum() / num_valid
        term = term * labelled_batch
        supcon = (per_anchor * valid).sum() / num_valid
        return {"loss": term, "supcon": supcon.detach(), "coral_term": term.detach()}


class CORALAmbient(CORAL):
    """Ablation: the same loss and head on the predicted x0 (image space, pooled) instead of the bottleneck."""

    name = "coral_ambient"

    def __init__(self, diffusion, class_counts, model, pool_size: int, **coral_hparams):
        self.pool_size = pool_size
        super().__init__(diffusion, class_counts, model, **coral_hparams)

    def embedding_dim(self, model: UNet) -> int:
        return model.head.in_channels * self.pool_size ** 2

    def embedding(self, x_t, t, eps, bottleneck):
        x0_pred = self.diffusion.predict_x0(x_t, t, eps.float())
        return F.adaptive_avg_pool2d(x0_pred, self.pool_size).flatten(1)


OBJECTIVES = {cls.name: cls for cls in (DDPM, CBDM, T2H, CORAL, CORALAmbient)}


def build_objective(name: str, hparams: dict, diffusion: Diffusion, class_counts, model: UNet) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"methods: unknown method {name!r}; allowed: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](diffusion, class_counts, model, **hparams)
