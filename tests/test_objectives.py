"""Objectives against hand-worked cases and closed forms (docs/method.md §4)."""
import math

import numpy as np
import pytest
import torch

from coral.diffusion import Diffusion
from coral.objectives import (CBDM, DDPM, build_objective, coral_time_weight, drop_labels,
                              supcon_per_anchor, t2h_targets)
from coral.unet import build_unet

DIFFUSION = Diffusion()


def small_unet(dropout=0.0):
    torch.manual_seed(0)
    model = build_unet({"ch": 32, "ch_mult": [1, 2], "attn": [], "num_res_blocks": 1, "dropout": dropout}, 1, 10)
    # Perturb the near-zero output layers so predictions depend on the label.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_supcon_hand_worked_batch():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    z = torch.tensor([e1, e1, e2, [-1.0, 0.0], e2])
    y = torch.tensor([0, 0, 1, 1, 2])  # anchor 4 has no positive
    loss, valid = supcon_per_anchor(z, y, temperature=1.0)
    e = math.e
    expected = [math.log(e + 2 + 1 / e) - 1, math.log(e + 2 + 1 / e) - 1, math.log(3 + e), math.log(2 + 2 / e)]
    assert valid.tolist() == [True, True, True, True, False]
    assert loss[:4].tolist() == pytest.approx(expected, rel=1e-6)
    assert loss[valid].mean().item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_supcon_temperature_scales_similarities():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    loss, _ = supcon_per_anchor(z, y, temperature=0.5)
    # anchor 0: positive 1 (cos 0.6), negatives {1, 2} (cos 0.6, 0)
    assert loss[0].item() == pytest.approx(-math.log(math.exp(1.2) / (math.exp(1.2) + 1)), rel=1e-6)


def test_coral_time_weight_endpoints():
    T, w, tau_r = 1000, 0.05, 0.3
    lam = coral_time_weight(torch.tensor([0, T - 1]), T, w, tau_r)
    assert lam[0].item() == pytest.approx(w * math.exp(1 / tau_r), rel=1e-6)  # 0.05 * 28.03
    assert lam[1].item() == pytest.approx(w * math.exp(1 / (T * tau_r)), rel=1e-6)


def test_coral_batch_mean_weight_times_supcon():
    model = small_unet()
    coral = build_objective("coral", {"weight": 0.05, "tau_r": 0.3, "tau_sc": 0.1, "reduction": "batch_mean",
                                      "proj_dim": 8}, DIFFUSION, torch.ones(10), model)
    torch.manual_seed(1)
    x0, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.tensor([0, 0, 1, 1, 2, 3])
    t, noise = torch.tensor([0, 100, 500, 999, 10, 20]), torch.randn(6, 1, 8, 8)
    terms = coral(model, x0, y, y, t, noise)
    lam_bar = (0.05 * torch.exp((1 - t / 1000) / 0.3)).mean()
    assert terms["coral_term"].item() == pytest.approx(lam_bar.item() * terms["supcon"].item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["mse"].item() + terms["coral_term"].item(), rel=1e-5)
    dropped = coral(model, x0, y, torch.full_like(y, -1), t, noise)
    assert dropped["coral_term"].item() == 0 and dropped["loss"].item() == pytest.approx(dropped["mse"].item())


def test_cbdm_with_tau_zero_equals_ddpm():
    model = small_unet()
    torch.manual_seed(2)
    x0, y = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (8,))
    t, noise = torch.randint(0, 1000, (8,)), torch.randn(8, 1, 8, 8)
    counts = torch.arange(10, 0, -1)
    cbdm = CBDM(DIFFUSION, counts, model, tau=0.0, gamma=0.25, prior="train")
    ddpm = DDPM(DIFFUSION, counts, model)
    assert cbdm(model, x0, y, y, t, noise, **cbdm.draw(x0, y, y, t, noise))["loss"].item() == pytest.approx(
        ddpm(model, x0, y, y, t, noise)["loss"].item(), rel=1e-5)


class PerClassConstant(torch.nn.Module):
    """eps(x, t, y) = a[y] everywhere: a model whose predictions are known by hand."""

    def __init__(self, values):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(values))

    def forward(self, x, t, y, return_bottleneck=False):
        return self.a[y.clamp(min=0)].reshape(-1, 1, 1, 1).expand_as(x)


def test_cbdm_regulariser_hand_built_case():
    model = PerClassConstant([1.0, 2.0, 0.0, -1.0])
    counts = torch.tensor([0, 0, 0, 5])  # the prior puts all mass on class 3: y' = 3 always
    cbdm = CBDM(DIFFUSION, counts, model, tau=2.0, gamma=0.25, prior="train")
    y = torch.tensor([0, 1])
    t = torch.tensor([250, 500])
    noise = torch.zeros(2, 1, 2, 2)
    x0 = torch.zeros(2, 1, 2, 2)
    terms = cbdm(model, x0, y, y, t, noise, **cbdm.draw(x0, y, y, t, noise))
    w = [0.25 * 2.0, 0.5 * 2.0]
    # (a_y - a_3)^2: (1 - -1)^2 = 4, (2 - -1)^2 = 9; mean over batch and pixels
    expected_reg = (w[0] * 4 + w[1] * 9) / 2
    assert terms["cb_reg"].item() == pytest.approx(expected_reg)
    assert terms["cb_commit"].item() == pytest.approx(expected_reg)
    assert terms["mse"].item() == pytest.approx((1 + 4) / 2)
    terms["loss"].backward()
    # Only the commitment term reaches a[3] (y' side), scaled by gamma; d/da3 of mean w (a_y - a3)^2.
    expected_grad_a3 = 0.25 * (w[0] * 2 * (-1 - 1) + w[1] * 2 * (-1 - 2)) / 2
    assert model.a.grad[3].item() == pytest.approx(expected_grad_a3)
    # a[0] gets the DDPM term and the regulariser (commitment is stopped on the y side).
    assert model.a.grad[0].item() == pytest.approx(2 * 1 / 2 + w[0] * 2 * (1 - -1) / 2)


def test_t2h_target_is_true_noise_when_gate_rejects():
    torch.manual_seed(3)
    prior = torch.tensor([0.9] + [0.1 / 9] * 9)
    y = torch.tensor([0, 9, 9, 9])  # anchor 0 (head) may only keep itself
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    t = torch.full((4,), 999)
    for _ in range(50):
        noise = torch.randn_like(x0)
        x_t = DIFFUSION.q_sample(x0, t, noise)
        targets, j, _ = t2h_targets(DIFFUSION, x0, x_t, t, y, noise, prior, "t2h")
        assert j[0].item() == 0 and torch.equal(targets[0], noise[0])
        for i in range(1, 4):  # tail anchors: transferred targets follow the closed form
            abar = DIFFUSION.alphas_bar[999].double()
            expected = (x_t[i].double() - abar.sqrt() * x0[j[i]].double()) / (1 - abar).sqrt()
            assert torch.allclose(targets[i].double(), expected, atol=1e-4)


def test_t2h_target_noises_the_chosen_image_to_x_t():
    """eps~_i = predict_eps(x_t^i, t_i, x_0^j): noising x_0^j with it gives back x_t^i."""
    torch.manual_seed(6)
    x0, y = torch.rand(8, 1, 4, 4) * 2 - 1, torch.arange(8)
    t, noise = torch.tensor([0, 5, 50, 200, 400, 600, 800, 999]), torch.randn(8, 1, 4, 4)
    x_t = DIFFUSION.q_sample(x0, t, noise)
    targets, j, _ = t2h_targets(DIFFUSION, x0, x_t, t, y, noise, torch.ones(8) / 8, "full")
    kept = (j == torch.arange(8)).reshape(-1, 1, 1, 1)
    assert not kept.all()  # some targets were transferred
    assert torch.equal(targets, torch.where(kept, noise, DIFFUSION.predict_eps(x_t, t, x0[j])))
    assert torch.allclose(DIFFUSION.q_sample(x0[j], t, targets), x_t, atol=1e-5)


def test_t2h_choice_frequencies_match_posterior():
    torch.manual_seed(4)
    x0 = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, -0.5]]).reshape(3, 1, 1, 2)
    y = torch.tensor([0, 1, 2])
    t = torch.full((3,), 200)
    noise = torch.randn_like(x0)
    x_t = DIFFUSION.q_sample(x0, t, noise)
    abar = float(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[200])
    c = x_t.reshape(3, 2).double().numpy() / math.sqrt(abar)
    d2 = ((c[:, None, :] - x0.reshape(3, 2).double().numpy()[None]) ** 2).sum(-1)
    logits = -d2 / (2 * (1 / abar - 1))
    posterior = np.exp(logits - logits.max(1, keepdims=True))
    posterior /= posterior.sum(1, keepdims=True)
    counts = np.zeros((3, 3))
    draws = 4000
    for _ in range(draws):
        _, j, _ = t2h_targets(DIFFUSION, x0, x_t, t, y, noise, torch.ones(3) / 3, "full")
        counts[np.arange(3), j.numpy()] += 1
    assert np.abs(counts / draws - posterior).max() < 0.03


@pytest.mark.parametrize("mode,p", [("batch", 0.1), ("sample", 0.3)])
def test_label_drop_rates(mode, p):
    torch.manual_seed(5)
    y = torch.arange(32) % 10
    dropped = torch.stack([drop_labels(y, mode, p) < 0 for _ in range(4000)])  # (draws, B)
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.015)
    per_batch = dropped.float().mean(1)
    if mode == "batch":  # all or nothing within a batch
        assert set(per_batch.unique().tolist()) <= {0.0, 1.0}
    else:
        assert ((per_batch > 0) & (per_batch < 1)).float().mean() > 0.9


def test_dropped_labels_keep_true_labels_for_the_network_only():
    y = torch.tensor([3, 4])
    assert drop_labels(y, "sample", 0.0).tolist() == [3, 4]
    assert drop_labels(y, "sample", 1.0).tolist() == [-1, -1]


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'dppm'"):
        build_objective("dppm", {}, DIFFUSION, torch.ones(10), small_unet())


def test_every_registered_method_has_its_objective_and_no_other():
    """coral.methods is the one list of methods; coral.objectives implements exactly those."""
    from coral.methods import NAMES
    from coral.objectives import OBJECTIVES
    assert list(OBJECTIVES) == list(NAMES)
